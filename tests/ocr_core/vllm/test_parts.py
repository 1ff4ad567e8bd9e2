"""The vLLM engine's parts that need no server: prompts, pages, loop detection, metrics parsing."""

from __future__ import annotations

import pytest
from PIL import Image

from ocr_core.vllm import metrics
from ocr_core.vllm.client import repeated_tail
from ocr_core.vllm.pages import join_pages, pages
from ocr_core.vllm.prompts import TASKS, prompt_for


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("text", "提取图中的文字。"),
        ("spotting", "检测并识别图片中的文字，将文本坐标格式化输出。"),
        ("fields:姓名, 金额", "提取图片中的: ['姓名', '金额'] 的字段内容，并按照JSON格式返回。"),
        ("translate:en", "再将文字内容翻译为英文。"),
    ],
)
def test_prompts_are_the_published_ones(task: str, expected: str) -> None:
    assert prompt_for(task).endswith(expected) or prompt_for(task) == expected


@pytest.mark.parametrize("task", ["", "fields:", "translate:fr", "Text", "text:extra", "提取"])
def test_unknown_tasks_are_refused_with_the_choices(task: str) -> None:
    with pytest.raises(ValueError, match="markdown"):
        prompt_for(task)
    assert "markdown" in TASKS


def test_a_small_image_is_one_page_untouched() -> None:
    [page] = pages(Image.new("RGB", (800, 600), "white"))
    assert page.image.size == (800, 600) and page.box == (0, 0, 800, 600)
    assert page.tokens == 25 * 19 + 19 + 2


def test_a_large_photo_is_shrunk_to_the_longest_side() -> None:
    [page] = pages(Image.new("RGB", (4000, 3000), "white"), max_side=1024)
    assert page.image.size == (1024, 768)


def test_a_tall_capture_is_cut_into_overlapping_pages_not_squashed() -> None:
    result = pages(Image.new("RGB", (1080, 9000), "white"), max_side=1024)
    assert len(result) >= 5
    assert result[0].box[1] == 0 and result[-1].box[3] == 9000
    for before, after in zip(result, result[1:]):
        assert after.box[1] < before.box[3]  # overlap: no line falls between two pages
    for page in result:
        assert max(page.image.size) <= 1024
        assert page.image.width >= 600  # text keeps most of its size


def test_joined_pages_drop_what_the_overlap_read_twice() -> None:
    assert join_pages(["a\nb\nc\nd", "c\n d\ne", "e\nf"]) == "a\nb\nc\nd\ne\nf"
    assert join_pages(["x\ny", "z"]) == "x\ny\nz"


def test_a_loop_is_found_and_cut_to_one_copy() -> None:
    text = "发票号码 12345\n" + "表格一" * 40
    cut = repeated_tail(text)
    assert cut is not None and text[:cut] == "发票号码 12345\n表格一"


@pytest.mark.parametrize(
    "text",
    [
        "目录 ........ 3",  # a dotted leader
        "| --- | --- | --- | --- |",  # a table rule
        "ha " * 5,
        "1\n2\n3\n4\n5\n6\n7\n8\n9\n10",
        "",
    ],
)
def test_honest_repetition_is_not_a_loop(text: str) -> None:
    assert repeated_tail(text) is None


SAMPLE = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tencent/HunyuanOCR"} 4.0
vllm:num_requests_waiting{engine="0",model_name="tencent/HunyuanOCR"} 12.0
vllm:kv_cache_usage_perc{engine="0",model_name="tencent/HunyuanOCR"} 0.25
vllm:num_preemptions_total{engine="0",model_name="tencent/HunyuanOCR"} 3.0
vllm:request_queue_time_seconds_sum{engine="0",model_name="tencent/HunyuanOCR"} 6.5
vllm:request_queue_time_seconds_count{engine="0",model_name="tencent/HunyuanOCR"} 13.0
vllm:request_queue_time_seconds_bucket{engine="0",le="0.3",model_name="tencent/HunyuanOCR"} 2.0
vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="0",num_gpu_blocks="2048"} 1.0
vllm:num_requests_running{engine="0",model_name="other"} 9.0
"""


def test_metrics_are_read_for_the_model() -> None:
    snap = metrics.parse(SAMPLE, model="tencent/HunyuanOCR", at=1.0)
    assert (snap.running, snap.waiting, snap.kv_usage, snap.preemptions) == (4, 12, 0.25, 3)
    assert (snap.queue_time_sum, snap.queue_time_count) == (6.5, 13)
    assert snap.kv_tokens == 2048 * 16
    assert metrics.parse(SAMPLE).running == 13  # every model when none is named
