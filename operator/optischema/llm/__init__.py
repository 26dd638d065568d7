"""The only httpx user: LLM providers whose every suggestion is re-checked by ``analysis``."""
