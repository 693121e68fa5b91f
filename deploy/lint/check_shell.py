"""shellcheck every shell script of the repository, including Terraform's user-data templates.

Scripts: ``.ci/run``, every tracked ``*.sh``, and ``terraform/templates/*.sh.tftpl`` rendered
with placeholder values (Terraform's ``${name}`` expressions replaced, ``$${`` unescaped) so
shellcheck sees the script an instance would run.

Run: ``.venv/bin/python deploy/lint/check_shell.py``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATE_EXPR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render_template(text: str, placeholder: str = "placeholder") -> str:
    """What templatefile() would produce, with every variable set to ``placeholder``.

    Raises:
        ValueError: the template uses a Terraform expression other than a plain variable
            (``%{ }`` directives, function calls), which this renderer cannot stand in for.
    """
    if "%{" in text:
        raise ValueError("template directives (%{ ... }) are not supported here")
    rendered = TEMPLATE_EXPR.sub(placeholder, text)
    leftover = re.search(r"(?<!\$)\$\{[^}]*\}", rendered)
    if leftover:
        raise ValueError(f"unsupported template expression {leftover.group(0)!r}")
    return rendered.replace("$${", "${")


def template_variables(text: str) -> set[str]:
    return set(TEMPLATE_EXPR.findall(text))


def shell_scripts() -> list[Path]:
    tracked = subprocess.run(
        ["git", "ls-files", "*.sh"], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
    ).stdout.split()
    found = {REPO / ".ci" / "run", *(REPO / p for p in tracked)}
    # Untracked new scripts count too (a helper's file is not committed yet).
    found.update(p for p in REPO.glob("deploy/**/*.sh"))
    return sorted(p for p in found if p.is_file())


def templates() -> list[Path]:
    return sorted((REPO / "terraform" / "templates").glob("*.sh.tftpl"))


def main() -> int:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        print("shellcheck is not installed; install it with: apt-get install shellcheck", file=sys.stderr)
        return 2
    scripts = [str(p) for p in shell_scripts()]
    with tempfile.TemporaryDirectory(prefix="userdata-") as tmp:
        for template in templates():
            rendered = Path(tmp) / template.name.removesuffix(".tftpl")
            rendered.write_text(render_template(template.read_text(encoding="utf-8")), encoding="utf-8")
            scripts.append(str(rendered))
        proc = subprocess.run([shellcheck, "--severity=style", *scripts], timeout=120, check=False)
    names = ", ".join(Path(s).name for s in scripts)
    state = "clean" if proc.returncode == 0 else "have findings"
    print(f"shellcheck: {len(scripts)} scripts {state} ({names})")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
