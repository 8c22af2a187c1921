"""The options of a batch, declared once: the upload routes read them from the form, the batch row stores them as
JSON, the worker and `denocap run` read them back."""
from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.names import CAPTIONERS, DENOISERS


class BatchOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    add_noise: float | None = Field(None, ge=0, le=255, allow_inf_nan=False,
                                    description="add Gaussian noise of this sigma (0-255) first; the upload "
                                                "becomes the clean reference")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the added noise")
    denoise_sigma: float | None = Field(None, ge=0, le=255, allow_inf_nan=False,
                                        description="tell the denoiser this noise level (0-255) instead of "
                                                    "estimating it")
    denoiser: str = Field("ffdnet", description=f"one of: {', '.join(DENOISERS)}")
    captioner: str = Field("attention", description=f"one of: {', '.join(CAPTIONERS)}")

    @field_validator("denoiser")
    @classmethod
    def _known_denoiser(cls, value: str) -> str:
        if value not in DENOISERS:
            raise ValueError(f"unknown denoiser {value!r}; known: {', '.join(DENOISERS)}")
        return value

    @field_validator("captioner")
    @classmethod
    def _known_captioner(cls, value: str) -> str:
        if value not in CAPTIONERS:
            raise ValueError(f"unknown captioner {value!r}; known: {', '.join(CAPTIONERS)}")
        return value
