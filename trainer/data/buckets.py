"""Aspect-ratio buckets (upstream's scheme) and picking the nearest one. Pure functions of ints.

Buckets are (width, height) in pixels. With S = sorted(image_size) = (s0 ≤ s1), P = s0·s1, step `inc`,
minimum side `m` and largest ratio R:

- main buckets: (s0, s0), plus for w = m, m+inc, … ≤ s1 the pair (w, h) and (h, w) with
  h = min(s1, ⌊P/w⌋ rounded down to inc), when 1/R ≤ w/h ≤ R;
- sub buckets (for downscaled extra copies): every (w, h) on the inc grid from m to s1 with w·h ≤ P and
  1/R ≤ w/h ≤ R that is not a main bucket.

Both lists are sorted by ratio w/h; equal ratios put the larger bucket first. Worked examples:

    image_size   step  min  main buckets                                         sub buckets
    512          256   512  (512,512)                                            —
    768,512      128   512  (512,768) (512,640) (512,512) (640,512) (768,512)   —
    768,512      128   256  (384,768) (512,768) (512,640) (512,512) (640,512)   (256,512) (384,640) (256,384) (384,512)
                            (768,512) (768,384)                                  (384,384) (256,256) (512,384) (384,256)
                                                                                 (640,384) (512,256)
    1024         256   512  (512,1024) (768,1024) (1024,1024) (1024,768)        (512,768) (768,768) (512,512) (768,512)
                            (1024,512)
"""

from __future__ import annotations

Bucket = tuple[int, int]


def _ordered(buckets) -> list[Bucket]:
    return sorted(set(buckets), key=lambda b: (b[0] / b[1], -b[0] * b[1]))


def main_buckets(image_size: tuple[int, int], step: int, min_length: int, max_ratio: float) -> list[Bucket]:
    if step <= 0:
        raise ValueError("the bucket step must be positive")
    s0, s1 = sorted(image_size)
    area = s0 * s1
    found = {(s0, s0)}
    w = min_length
    while w <= s1:
        h = min(s1, area // w - (area // w) % step)
        if h > 0 and 1 / max_ratio <= w / h <= max_ratio:
            found |= {(w, h), (h, w)}
        w += step
    return _ordered(found)


def sub_buckets(image_size: tuple[int, int], step: int, min_length: int, max_ratio: float) -> list[Bucket]:
    s0, s1 = sorted(image_size)
    area = s0 * s1
    main = set(main_buckets(image_size, step, min_length, max_ratio))
    sides = range(min_length, s1 + 1, step)
    found = {(w, h) for w in sides for h in sides
             if w * h <= area and 1 / max_ratio <= w / h <= max_ratio and (w, h) not in main}
    return _ordered(found)


def nearest_bucket(width: int, height: int, buckets: list[Bucket]) -> int:
    """Index of the bucket whose ratio is closest to width/height (the first one on a tie)."""
    ratio = width / height
    errors = [abs(w / h - ratio) for w, h in buckets]
    return errors.index(min(errors))


def sub_bucket_order(width: int, height: int, buckets: list[Bucket], count: int) -> list[int]:
    """Indices for `count` downscaled copies: the closest ratio first; each pick costs +1 error, so the next
    copy goes to the next-closest bucket (and the list cycles when there are fewer buckets than copies)."""
    ratio = width / height
    errors = [abs(w / h - ratio) for w, h in buckets]
    picks = []
    for _ in range(count if buckets else 0):
        best = errors.index(min(errors))
        picks.append(best)
        errors[best] += 1
    return picks
