"""Pascal VOC for detcore: the ``voc`` dataset (VOC XML read natively) and
the ``voc`` metric (VOC mAP, area and 11-point)."""

__version__ = "0.1.0"
