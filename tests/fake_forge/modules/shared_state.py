"""Neo modules/shared_state.py: `State` — `begin(job=)`, `end()`, `interrupt()`, `skip()`, `stop_generating()`;
`interrupted`, `stopping_generation`, `skipped`, `job`, `job_no`, `job_count`, `sampling_step`, `sampling_steps`,
`textinfo`, `current_image`. `begin()` resets the flags (so does call_queue.wrap_gradio_call's finally).

Test-only: `begun` (how many jobs began), `progress_snapshot()` (what /internal/progress computes)."""

import time


class State:
    def __init__(self):
        self.interrupted = False
        self.skipped = False
        self.stopping_generation = False
        self.job = ""
        self.job_no = 0
        self.job_count = 0
        self.processing_has_refined_job_count = False
        self.job_timestamp = "0"
        self.sampling_step = 0
        self.sampling_steps = 0
        self.current_latent = None
        self.current_image = None
        self.current_image_sampling_step = 0
        self.id_live_preview = 0
        self.textinfo = None
        self.time_start = None
        self.server_start = time.time()
        self.begun = 0  # test-only

    def interrupt(self):
        self.interrupted = True

    def skip(self):
        self.skipped = True

    def stop_generating(self):
        self.stopping_generation = True

    def nextjob(self):
        self.job_no += 1
        self.sampling_step = 0
        self.current_image_sampling_step = 0

    def begin(self, job: str = "(unknown)"):
        self.sampling_step = 0
        self.time_start = time.time()
        self.job_count = -1
        self.processing_has_refined_job_count = False
        self.job_no = 0
        self.job_timestamp = time.strftime("%Y%m%d%H%M%S")
        self.current_latent = None
        self.current_image = None
        self.current_image_sampling_step = 0
        self.id_live_preview = 0
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.textinfo = None
        self.job = job
        self.begun += 1

    def end(self):
        self.job = ""
        self.job_count = 0

    def progress_snapshot(self):
        """Test-only: /internal/progress — job_no/job_count + (1/job_count)·sampling_step/sampling_steps (each term
        only when its count is > 0; capped at 1), eta from the time since begin; plus the fields it shows."""
        progress = 0.0
        if self.job_count > 0:
            progress += self.job_no / self.job_count
            if self.sampling_steps > 0:
                progress += 1 / self.job_count * self.sampling_step / self.sampling_steps
        progress = min(progress, 1.0)
        elapsed = time.time() - self.time_start if self.time_start else 0.0
        eta = elapsed / progress - elapsed if progress > 0 else None
        return {"active": bool(self.job), "progress": progress, "eta": eta, "textinfo": self.textinfo,
                "job": self.job, "job_no": self.job_no, "job_count": self.job_count,
                "sampling_step": self.sampling_step, "sampling_steps": self.sampling_steps}
