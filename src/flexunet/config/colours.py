"""Display colours of the classes when the config gives no [mask] rgb_map (class-index masks)."""

from __future__ import annotations


# the colours class-index masks are drawn in when no rgb_map is given: black, then plan's colour order
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (0, 255, 0), (0, 0, 255), (255, 0, 0), (255, 255, 0), (0, 255, 255), (255, 0, 255),
    (255, 255, 255), (255, 165, 0), (128, 0, 128), (128, 128, 128), (128, 0, 0), (128, 128, 0), (0, 0, 128),
    (0, 128, 128), (0, 128, 0), (255, 192, 203))


def default_rgb_map(num_classes: int) -> dict[tuple[int, int, int], int]:
    """Distinct display colours for ``num_classes`` classes: CLASS_COLOURS, then hashed colours."""
    colours = list(CLASS_COLOURS[:num_classes])
    seen = set(colours)
    i = 0
    while len(colours) < num_classes:
        i += 1
        code = (i * 2654435761) % (1 << 24)          # an odd multiplier: distinct codes for distinct i
        colour = ((code >> 16) & 255, (code >> 8) & 255, code & 255)
        if colour not in seen:
            colours.append(colour)
            seen.add(colour)
    return {colour: k for k, colour in enumerate(colours)}
