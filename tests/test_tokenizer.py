"""The CLIP tokenizer built from open_clip's BPE file reproduces OpenAI CLIP's ids."""

from trainer.models.tokenizer import VOCAB_SIZE, clip_tokenizer


def test_known_ids_and_specials():
    tok = clip_tokenizer()
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tok) == VOCAB_SIZE == 49408
    assert tok.bos_token_id == 49406 and tok.eos_token_id == 49407


def test_padding_differs_between_sd1_and_open_clip_towers():
    sd1, open_clip = clip_tokenizer(), clip_tokenizer("!")
    a = sd1("cat", padding="max_length", max_length=77).input_ids
    b = open_clip("cat", padding="max_length", max_length=77).input_ids
    assert len(a) == len(b) == 77
    assert a[3:] == [49407] * 74  # SD1 pads with <|endoftext|>
    assert b[:3] == a[:3] and b[3:] == [0] * 74  # "!" is id 0


def test_truncation_keeps_77_tokens_ending_in_eos():
    tok = clip_tokenizer()
    ids = tok("word " * 200, padding="max_length", max_length=77, truncation=True).input_ids
    assert len(ids) == 77 and ids[-1] == 49407
