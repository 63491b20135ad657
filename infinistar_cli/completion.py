"""Shell completion of values: `--model <TAB>` offers the preset names, then model folders."""
from __future__ import annotations

from click.shell_completion import CompletionItem

from engine import presets


def complete_model(ctx, param, incomplete: str) -> list[CompletionItem]:
    """Preset names starting with what was typed, and the shell's directory completion (bash
    falls back to it when no name matches, zsh and fish offer both)."""
    names = [CompletionItem(name, help=presets.get(name).description)
             for name in presets.names() if name.startswith(incomplete)]
    return [CompletionItem(incomplete, type="dir"), *names]
