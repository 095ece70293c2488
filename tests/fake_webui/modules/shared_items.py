"""webui modules/shared_items.py (the part that matters here): `modules.shared`'s module class is swapped so that
`shared.sd_model` is a property over `sd_models.model_data` (assigning it calls `set_sd_model`)."""

import sys


class Shared(sys.modules["modules.shared"].__class__):
    """Provides sd_model as a property, so that it can be created and loaded on demand rather than at startup."""

    @property
    def sd_model(self):
        import modules.sd_models

        return modules.sd_models.model_data.get_sd_model()

    @sd_model.setter
    def sd_model(self, value):
        import modules.sd_models

        modules.sd_models.model_data.set_sd_model(value)


sys.modules["modules.shared"].__class__ = Shared
