"""The Hub Space widget of this metric (the layout `evaluate-cli create` writes)."""

from pathlib import Path

import evaluate
from evaluate.utils import launch_gradio_widget

module = evaluate.load(str(Path(__file__).with_name("ami.py")))
launch_gradio_widget(module)
