"""Neo modules/shared_items.py (the part that matters here): `modules.shared`'s module class is swapped so that
`shared.sd_model` is a property returning `sd_models.model_data.sd_model` — it **never loads** (FakeInitialModel until
the first forge_model_reload, None during a reload and after a failed one). Assigning calls `set_sd_model`."""

import sys


class Shared(sys.modules["modules.shared"].__class__):
    @property
    def sd_model(self):
        import modules.sd_models

        return modules.sd_models.model_data.sd_model

    @sd_model.setter
    def sd_model(self, value):
        import modules.sd_models

        modules.sd_models.model_data.set_sd_model(value)


sys.modules["modules.shared"].__class__ = Shared
