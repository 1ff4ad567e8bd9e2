"""HunyuanOCR's published task prompts (Tencent-Hunyuan/HunyuanOCR, inference/utils/tasks.py and the
model card), chosen by task name. The authors found hand-edited instructions degrade the model, so
routes pick a task, never free text; only field extraction and translation take an argument:
`fields:Name,Amount,Date`, `translate:en`, `translate:zh`.
"""

from __future__ import annotations

TASKS: dict[str, str] = {
    # Plain text in reading order: the default.
    "text": "提取图中的文字。",
    # Text spotting: every line with its box, coordinates normalised to 0–1000.
    "spotting": "检测并识别图片中的文字，将文本坐标格式化输出。",
    # Document parsing to Markdown (tables as HTML, formulas as LaTeX, headers and footers left out).
    "markdown": "提取文档图片中正文的所有信息用markdown格式表示，其中页眉、页脚部分忽略，表格用html格式表达，文档中公式用latex格式表示，按照阅读顺序组织进行解析。",
    "table": "把图中的表格解析为HTML。",
    "formula": "识别图片中的公式，用LaTeX格式表示。",
    "chart": "解析图中的图表，对于流程图使用Mermaid格式表示，其他图表使用Markdown格式表示。",
}

_TRANSLATE = {
    "en": "按照阅读顺序，提取图中文字，公式用latex格式表示，表格用markdown格式表示，再将文字内容翻译为英文。",
    "zh": "按照阅读顺序，提取图中文字，公式用latex格式表示，表格用markdown格式表示，再将文字内容翻译为中文。",
}


def prompt_for(task: str) -> str:
    """The prompt for `task`; ValueError names the tasks there are."""
    name, _, argument = task.partition(":")
    if name in TASKS and not argument:
        return TASKS[name]
    if name == "fields" and argument.strip():
        fields = [f.strip() for f in argument.split(",") if f.strip()]
        return f"提取图片中的: {fields} 的字段内容，并按照JSON格式返回。"
    if name == "translate" and argument in _TRANSLATE:
        return _TRANSLATE[argument]
    raise ValueError(
        f"unknown OCR task {task!r}: use one of {', '.join(sorted(TASKS))}, 'fields:Name,Amount', 'translate:en' or 'translate:zh'"
    )
