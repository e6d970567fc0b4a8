"""Chat templates rendered with a time, memory and output limit (docs/security.md, "Templates").

A chat template from a model folder (``chat_template.jinja``, ``chat_template.json`` or the
``chat_template`` entry of ``tokenizer_config.json``) is a Jinja program written by whoever made the
folder. Jinja's sandbox stops it from reaching Python objects, but not from looping for hours or
building a string of many gigabytes, and a loop in pure Python cannot be stopped from another thread:
ComfyUI has one prompt executor, so a template that never ends would hold every later prompt.

The template is therefore rendered by transformers' own renderer (the same function
``tokenizer.apply_chat_template`` calls, so the text is identical) in a short-lived child process,
which is killed when the template runs longer than :data:`RENDER_SECONDS` (``PSA_TEMPLATE_SECONDS``), and which refuses to allocate more than
:data:`MEMORY_BYTES` or to return more than :data:`MAX_OUTPUT_CHARS`. Results are memoised
(a template is deterministic for the same messages and special tokens), so repeated prompts do
not start a process again.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from typing import Sequence

from .vocabulary import ProfileError

ENV_SECONDS = "PSA_TEMPLATE_SECONDS"
RENDER_SECONDS = 10.0  # the template's own time; starting the child (about 1 s) is not counted
STARTUP_SECONDS = 120.0
MEMORY_BYTES = 2 << 30
MAX_OUTPUT_CHARS = 4 << 20
_MEMO_SIZE = 256
_memo: OrderedDict[str, list[str]] = OrderedDict()

_CHILD = r"""
import json, sys
if sys.path and sys.path[0] in ("", "."):
    sys.path.pop(0)  # never import from the working directory

def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

def main():
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    try:
        import resource
        limit = request["memory"]
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass  # no address-space limit on this platform; the time limit still holds
    from transformers.utils.chat_template_utils import render_jinja_template
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    texts, total = [], 0
    try:
        for messages in request["conversations"]:
            rendered, _ = render_jinja_template(conversations=[messages], chat_template=request["template"],
                                                add_generation_prompt=request["add_generation_prompt"],
                                                **request["kwargs"])
            total += len(rendered[0])
            if total > request["max_chars"]:
                return reply({"error": "output", "detail": str(total)})
            texts.append(rendered[0])
    except MemoryError:
        return reply({"error": "memory", "detail": ""})
    except Exception as exc:
        line = getattr(exc, "lineno", None)
        return reply({"error": type(exc).__name__, "detail": str(exc)[:200], "line": line})
    reply({"texts": texts})

main()
"""


class TemplateRenderError(ProfileError):
    """A chat template was refused: too slow, too large, or it failed (the message names its file)."""


def render_seconds() -> float:
    """The render time limit: ``PSA_TEMPLATE_SECONDS`` when set to a positive number, else :data:`RENDER_SECONDS`."""
    try:
        value = float(os.environ.get(ENV_SECONDS, ""))
    except ValueError:
        return RENDER_SECONDS
    return value if 0 < value < 3600 else RENDER_SECONDS


def _refuse(source: str, what: str) -> TemplateRenderError:
    return TemplateRenderError(f"{source}: {what}; refusing this chat template (a template is a program: use the "
                               "model's original one, or delete the file so the project's Qwen2.5 template is used)")


def _run_child(payload: bytes, source: str, seconds: float) -> dict:
    """The child's answer; the clock starts when it has imported the renderer (its start-up is not the template's)."""
    try:
        child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    except OSError as exc:
        raise TemplateRenderError(f"{source}: cannot start the template renderer ({exc.strerror}); check that "
                                  "Python can start a process here") from None
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in child.stdout:
            lines.put(line)
        lines.put(b"")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        child.stdin.write(payload)
        child.stdin.close()
        ready = lines.get(timeout=STARTUP_SECONDS)
        if ready.strip() != b"ready":
            return {"error": "crash", "detail": f"the renderer did not start (exit status {child.poll()})"}
        try:
            line = lines.get(timeout=seconds)
        except queue.Empty:
            raise _refuse(source, f"rendering did not finish within {seconds:g} s") from None
    except queue.Empty:
        raise TemplateRenderError(f"{source}: the template renderer did not start within {STARTUP_SECONDS:g} s; the "
                                  "machine is overloaded, try again") from None
    except OSError:
        line = b""
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        reader.join(5)
    try:
        return json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {"error": "crash", "detail": f"exit status {child.returncode}"}


def render_chat(template: str, conversations: Sequence[list[dict]], special_tokens: dict, source: str,
                add_generation_prompt: bool = True, seconds: float | None = None) -> list[str]:
    """Each conversation rendered through ``template`` (as ``apply_chat_template(tokenize=False)`` would).

    ``source`` names the template's file in errors. Raises :class:`TemplateRenderError` when the
    render takes longer than ``seconds`` (default :func:`render_seconds`), needs more than
    :data:`MEMORY_BYTES`, returns more than :data:`MAX_OUTPUT_CHARS` characters, or fails."""
    seconds = render_seconds() if seconds is None else seconds
    request = {"template": template, "conversations": [list(c) for c in conversations],
               "add_generation_prompt": add_generation_prompt, "kwargs": special_tokens,
               "memory": MEMORY_BYTES, "max_chars": MAX_OUTPUT_CHARS}
    try:
        payload = json.dumps(request, sort_keys=True, default=str).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        raise _refuse(source, "the messages or special tokens cannot be passed to the renderer") from None
    key = hashlib.sha256(payload).hexdigest()
    if key in _memo:
        _memo.move_to_end(key)
        return list(_memo[key])
    answer = _run_child(payload, source, seconds)
    if "texts" in answer:
        texts = [str(t) for t in answer["texts"]]
        _memo[key] = texts
        while len(_memo) > _MEMO_SIZE:
            _memo.popitem(last=False)
        return list(texts)
    kind, line = answer.get("error"), answer.get("line")
    where = f" (line {line})" if isinstance(line, int) else ""
    if kind == "output":
        raise _refuse(source, f"the rendered text is over {MAX_OUTPUT_CHARS} characters")
    if kind == "memory":
        raise _refuse(source, f"rendering needed more than {MEMORY_BYTES >> 30} GiB of memory")
    if kind == "crash":
        raise _refuse(source, f"the renderer stopped without an answer ({answer.get('detail')}; out of memory, or "
                              "transformers cannot be imported)")
    if kind == "SecurityError":
        raise _refuse(source, f"the template tried something Jinja's sandbox forbids{where}")
    if kind == "TemplateSyntaxError":
        raise _refuse(source, f"the template is not valid Jinja{where}")
    # Other failures (a template's own raise_exception, a missing variable): our wording, the class only.
    raise _refuse(source, f"rendering failed ({kind}{where})")
