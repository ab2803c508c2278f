"""Model access: loading, prompt formats, generation with a trace."""

from .architecture import ModelLayout, model_layout
from .constrained import Grammar
from .default_model import DEFAULT_MODEL_NAME, default_model_path
from .generation import Generation
from .local_model import LocalModel
from .prompts import QA_INSTRUCTION, PromptFormat, QAPrompt, qa_prompt
from .streaming import GenerationStream

__all__ = ["DEFAULT_MODEL_NAME", "Generation", "GenerationStream", "Grammar", "LocalModel",
           "ModelLayout", "PromptFormat", "QAPrompt", "QA_INSTRUCTION", "default_model_path",
           "model_layout", "qa_prompt"]
