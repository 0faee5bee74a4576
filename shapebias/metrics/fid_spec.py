"""The two FID protocols as plain data (what each computes is in :mod:`shapebias.metrics.fid`).

No torch here: the FastGAN job's ``Config`` offers the protocols' names as choices, and
``--help`` reads them without loading the Inception network (:mod:`shapebias.metrics.fid`
re-exports every name).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from shapebias.errors import check_choice


@dataclass(frozen=True)
class FidProtocol:
    name: str
    n_samples: int  # generated images per evaluation (authors: rounded down to whole batches)
    repeats: int  # evaluations per scoring; the best (lowest) is the score
    every: int  # iterations between evaluations
    pixels: str  # "png-files" (pytorch-fid) or "uint8[127,255]" (the authors' evaluator)
    resize_filter: str  # how the reference images are resized to the generator's size
    report: str = "best"  # the run's `fid` is the best of its evaluations

    def params(self) -> dict[str, str]:
        return {f"fid_protocol.{k}": str(v) for k, v in asdict(self).items() if k != "name"}


PROTOCOLS = {
    "standard": FidProtocol("standard", 5000, 1, 5000, "png-files", "bicubic"),
    "authors": FidProtocol("authors", 3000, 3, 1000, "uint8[127,255]", "bilinear"),
}


def get_protocol(name: str) -> FidProtocol:
    check_choice("fid_protocol", name, tuple(PROTOCOLS))
    return PROTOCOLS[name]
