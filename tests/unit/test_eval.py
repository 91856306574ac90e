import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vlm_r1.data.jsonl import read_samples
from vlm_r1.data.shapes import write_shapes
from vlm_r1.eval.metrics import coco_detection_metrics, rec_metrics
from vlm_r1.eval.runner import evaluate_samples
from vlm_r1.models import family_names, get_adapter
from vlm_r1.models.boxes import as_written, round_boxes, to_model
from vlm_r1.rewards.common import gt_boxes


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_shapes")
    return write_shapes(
        out, n_train=0, n_eval=12, seed=2, image_size="97..333", tasks=["rec", "ovd", "count"]
    )


def oracle(adapter, processor):
    """Writes the ground truth in the family's own coordinate system, as a perfect model would."""

    def generate(prompts):
        texts = []
        for p in prompts:
            sample = p.sample
            if sample.task in ("rec", "ovd"):
                boxes, labels = gt_boxes(sample.solution)
                # Two decimals (five for 0-1 systems): integer model units of a downscaled
                # image would cost COCO's strictest IoU thresholds (0.95) a little, which is not
                # what this test is about.
                space = adapter.box_space(processor, p.image_size)
                decimals = 5 if space.system == "norm1" else 2
                model_boxes = np.round(to_model(boxes, space), decimals) if len(boxes) else []
                if sample.task == "rec":
                    answer = json.dumps(as_written(round_boxes(model_boxes[:1], space)))
                else:
                    answer = (
                        json.dumps(
                            [
                                {"bbox_2d": [float(v) for v in b], "label": lab}
                                for b, lab in zip(model_boxes, labels, strict=True)
                            ]
                        )
                        if len(boxes)
                        else "None"
                    )
            else:
                answer = str(sample.solution)
            texts.append(f"<think>I checked.</think><answer>{answer}</answer>")
        return texts

    return generate


@pytest.mark.parametrize("family", family_names())
def test_oracle_in_the_family_convention_scores_perfectly(family, tiny_path, shapes):
    from transformers import AutoProcessor

    adapter = get_adapter(family)
    processor = AutoProcessor.from_pretrained(tiny_path(family))
    samples = [
        s
        for split in ("rec_eval_in", "ovd_eval_ood", "count_eval_in")
        for s in read_samples(str(shapes[split]))
    ]
    metrics, predictions = evaluate_samples(samples, adapter, processor, oracle(adapter, processor))
    assert metrics["rec"]["acc@0.5"] == 1.0
    assert metrics["ovd"]["mAP"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["count"]["accuracy"] == 1.0
    assert all(m["format_failure_rate"] == 0 for m in metrics.values())
    assert metrics["ovd"]["well_formed_rate"] == 1.0
    # The same answers read in the wrong coordinate system would not score perfectly.
    assert len(predictions) == len(samples)


def test_eval_reads_detection_answers_leniently_and_counts_the_well_formed(tiny_path, shapes):
    """Evaluation salvages the boxes of a broken answer (mAP as if it were whole) and says how
    many answers were the JSON the prompt asked for (what the strict rewards pay for)."""
    from transformers import AutoProcessor

    family = family_names()[0]
    adapter = get_adapter(family)
    processor = AutoProcessor.from_pretrained(tiny_path(family))
    samples = list(read_samples(str(shapes["ovd_eval_ood"])))
    perfect = oracle(adapter, processor)

    def half_broken(prompts):
        texts = perfect(prompts)
        return [
            t.replace("]</answer>", '], ": garbage</answer>') if i % 2 else t
            for i, t in enumerate(texts)
        ]

    metrics, _ = evaluate_samples(samples, adapter, processor, half_broken)
    broken = sum(1 for i, s in enumerate(samples) if i % 2 and s.solution.boxes)
    assert broken > 0
    assert metrics["ovd"]["mAP"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["ovd"]["well_formed_rate"] == pytest.approx(1 - broken / len(samples))


def test_vlm_r1_convention_is_stricter():
    gt = [np.array([[0.0, 0.0, 9.0, 9.0]])]
    # Boxes touching at half overlap: continuous IoU exactly 0.5.
    pred = [np.array([[0.0, 0.0, 9.0, 4.5]])]
    default, _ = rec_metrics(pred, gt)
    strict, ious = rec_metrics(pred, gt, "vlm-r1")
    assert default["acc@0.5"] == 1.0
    assert ious[0] == pytest.approx(10 * 5.5 / 100)  # inclusive pixels: 10 x 5.5 of 10 x 10
    assert strict["acc@0.5"] == 1.0
    exact_half, _ = rec_metrics(
        [np.array([[0.0, 0.0, 10.0, 5.0]])], [np.array([[0.0, 0.0, 10.0, 10.0]])], "default"
    )
    assert exact_half["acc@0.5"] == 1.0
    missing, _ = rec_metrics([None], gt, "vlm-r1")
    assert missing["acc@0.5"] == 0.0 and missing["miou"] == pytest.approx(
        1 / 100
    )  # [0,0,0,0] is one pixel


def test_detection_metrics_equal_direct_pycocotools():
    rng = np.random.default_rng(0)
    truth, predicted, images, anns, dets = [], [], [], [], []
    for image_id in range(1, 31):
        n = int(rng.integers(1, 5))
        xy = rng.uniform(0, 300, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(10, 80, (n, 2))], 1)
        labels = [str(rng.choice(["cat", "dog", "car"])) for _ in range(n)]
        pred = gt + rng.normal(0, 6, gt.shape)
        pred_labels = [lab if rng.random() < 0.85 else "dog" for lab in labels]
        scores = rng.random(n)
        truth.append((gt, labels))
        predicted.append((pred, pred_labels, scores))
        images.append({"id": image_id})
        for b, lab in zip(gt, labels, strict=True):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": {"car": 1, "cat": 2, "dog": 3}[lab],
                    "bbox": [b[0], b[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for b, lab, s in zip(pred, pred_labels, scores, strict=True):
            dets.append(
                {
                    "image_id": image_id,
                    "category_id": {"car": 1, "cat": 2, "dog": 3}[lab],
                    "score": s,
                    "bbox": [b[0], b[1], max(b[2] - b[0], 0), max(b[3] - b[1], 0)],
                }
            )
    ours = coco_detection_metrics(predicted, truth)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": images,
            "annotations": anns,
            "categories": [
                {"id": 1, "name": "car"},
                {"id": 2, "name": "cat"},
                {"id": 3, "name": "dog"},
            ],
        }
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ours["mAP"] == pytest.approx(ev.stats[0], abs=1e-6)
    assert ours["AP50"] == pytest.approx(ev.stats[1], abs=1e-6)
    assert ours["AR100"] == pytest.approx(ev.stats[8], abs=1e-6)


def test_answers_in_the_wrong_coordinate_system_are_caught(tiny_path, shapes):
    """Pixels given to a 0-1000 model (the classic VLM-R1 mistake) must not look fine."""
    from transformers import AutoProcessor

    adapter = get_adapter("qwen2_vl")
    processor = AutoProcessor.from_pretrained(tiny_path("qwen2_vl"))
    samples = list(read_samples(str(shapes["rec_eval_in"])))

    def pixels(prompts):
        return [
            f"<answer>{json.dumps([int(v) for v in gt_boxes(p.sample.solution)[0][0]])}</answer>"
            for p in prompts
        ]

    metrics, _ = evaluate_samples(samples, adapter, processor, pixels)
    assert metrics["rec"]["acc@0.5"] < 0.5
