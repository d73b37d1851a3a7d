"""Prompt translation: non-English prompts reach the upstream in English (issue #18).

Operators pick one translator (an OpenAI-compatible chat endpoint, DeepL, Baidu or a
self-hosted LibreTranslate); organizations switch it on or off. Parameters, URLs, weights and
references are never sent to the translator, so they reach the upstream byte for byte.
"""
