"""The prompt texts the policy sees (the refinement prompt, rendered per-aspect feedback), defined once: M0's refinement
data, the reflection search and the notebooks use the same words.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AspectNote:
    """One aspect's feedback: the verbal critique and the score on the rubric's scale."""

    aspect: str
    score: int | None
    max_score: int
    critique: str


def render_feedback(notes: list[AspectNote]) -> str:
    """``- logical correctness (2/5): Step 2 computes 7*8=54; 7*8 is 56.`` one line per aspect."""
    lines = []
    for n in notes:
        score = "?" if n.score is None else str(n.score)
        # an empty critique is a scalar-only message: the score without words
        lines.append(f"- {n.aspect} ({score}/{n.max_score})" + (f": {n.critique}" if n.critique else ""))
    return "\n".join(lines)


def scalar_notes(score: int | None, max_score: int = 5) -> list[AspectNote]:
    """The scalar-only message: one overall score and no critique (what the scalar-reward ablation knows)."""
    return [AspectNote("overall quality", score, max_score, "")]


REFINE_INSTRUCTION = "Revise the draft so that it fixes every problem the feedback names."


def refinement_prompt(question: str, draft: str, notes: list[AspectNote]) -> str:
    """The user message asking the policy to refine ``draft`` given the critiques."""
    return f"{question}\n\nDraft:\n{draft}\n\nFeedback:\n{render_feedback(notes)}\n\n{REFINE_INSTRUCTION}"


def chat(user: str, assistant: str | None = None) -> list[dict]:
    """A conversation in the messages format that ``apply_chat_template`` and TRL take."""
    msgs = [{"role": "user", "content": user}]
    if assistant is not None:
        msgs.append({"role": "assistant", "content": assistant})
    return msgs
