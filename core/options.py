"""The options of a batch, declared once: the upload routes read them from the form, the batch row stores them as
JSON, the worker and `denocap run` read them back."""
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from models.names import CAPTIONERS, DENOISERS


def _one_of(kind: str, names: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in names:
            raise ValueError(f"unknown {kind} {value!r}; known: {', '.join(names)}")
        return value
    return check


class BatchOptions(BaseModel):
    model_config = ConfigDict(frozen=True)

    add_noise: float | None = Field(None, ge=0, le=255, allow_inf_nan=False,
                                    description="add Gaussian noise of this sigma (0-255) first, clipped as a "
                                                "camera's; the upload becomes the clean reference")
    seed: int = Field(0, ge=0, le=2**31 - 1,
                      description="seed of the added noise, drawn for each image from it and the file")
    denoise_sigma: float | None = Field(None, ge=0, le=255, allow_inf_nan=False,
                                        description="tell the denoiser this noise level (0-255) instead of "
                                                    "estimating it")
    denoiser: Annotated[str, AfterValidator(_one_of("denoiser", DENOISERS))] = Field(
        "ffdnet", description=f"one of: {', '.join(DENOISERS)}")
    captioner: Annotated[str, AfterValidator(_one_of("captioner", CAPTIONERS))] = Field(
        "attention", description=f"one of: {', '.join(CAPTIONERS)}")
