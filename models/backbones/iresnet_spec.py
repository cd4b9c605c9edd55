"""IResNet's published shape (insightface arcface_torch): stage widths and blocks per depth.

Its own module so that the weights importer (``models.weights``) can read it without
importing the backbone that imports the weights importer.
"""

STAGE_WIDTHS = (64, 128, 256, 512)
MINIMUM_INPUT = 16  # four stride-2 stages
DEPTHS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    200: (6, 26, 60, 6),
}
