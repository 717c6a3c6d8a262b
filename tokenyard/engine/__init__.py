"""The engine: models, loaders, memory, scheduling, the runner and the offline API.

    from tokenyard.engine import LLM, SamplingParams
    LLM().chat([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=64, temperature=0))
"""

from tokenyard.engine.engine import LLMEngine
from tokenyard.engine.llm import LLM
from tokenyard.engine.outputs import RequestOutput
from tokenyard.engine.params import SamplingParams

__all__ = ["LLM", "LLMEngine", "RequestOutput", "SamplingParams"]
