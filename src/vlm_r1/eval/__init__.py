"""Evaluation: REC accuracy / mean IoU, COCO detection mAP, counting and QA accuracy."""
