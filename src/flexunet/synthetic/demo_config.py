"""The demo config shipped in the package (configs/demo.config), with the size and epochs a run asks for."""

from __future__ import annotations

import re
from importlib import resources


def demo_config_text(size: int = 256, epochs: int | None = None) -> str:
    """The shipped demo config, with the image size (and epochs) set."""
    text = resources.files("flexunet").joinpath("configs/demo.config").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^(image_width|image_height)(\s*)=.*$", rf"\g<1>\g<2>= {size}", text)
    text = re.sub(r"(?m)^size(\s*)=.*$", rf"size\g<1>= {size}", text)
    if epochs is not None:
        text = re.sub(r"(?m)^epochs(\s*)=.*$", rf"epochs\g<1>= {epochs}", text)
    return text
