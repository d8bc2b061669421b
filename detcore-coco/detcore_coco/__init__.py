"""detcore-coco: COCO datasets, the COCO metric, converters and demo data for detcore.

Importing this package is light; pycocotools and torch load when a dataset,
metric or command is used.
"""

__version__ = "0.1.0"
