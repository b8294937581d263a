"""The documentation: the site builds with every link and anchor resolved (`mkdocs build --strict`), and
the examples of docs/extending.md run as they are, in one process, in order."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_site_builds_with_every_link_resolved(tmp_path):
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    for page in ("index", "architecture", "extending", "performance", "reliability"):
        assert (tmp_path / "site" / page / "index.html").is_file() or page == "index"
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_links_point_at_pages_that_exist():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", readme)
    assert targets and all((ROOT / t).is_file() for t in targets), targets
    assert len(readme.splitlines()) <= 200


def test_the_extending_examples_run(tmp_path, kouvola):
    text = (ROOT / "docs" / "extending.md").read_text()
    blocks = re.findall(r"```(python|toml)\n(.*?)```", text, flags=re.S)
    assert [kind for kind, _ in blocks].count("python") >= 6
    script = []
    for kind, code in blocks:
        if kind == "toml":  # the city recipe, saved as the page says
            name = re.search(r'^name = "([^"]+)"', code, flags=re.M).group(1)
            (tmp_path / f"{name}.toml").write_text(code)
        else:
            script.append(code)
    (tmp_path / "examples.py").write_text("\n".join(script))
    p = subprocess.run([sys.executable, "examples.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    assert lines[0].startswith("mean travel time ") and float(lines[0].split()[-1]) > 0
    assert float(lines[1]) > 0  # the new method's episode
    assert lines[2].startswith("kouvola-evening ") and lines[2].endswith(" edges")
    assert lines[3] == "kouvola-pyrosm pyrosm ODbL-1.0"
    assert re.fullmatch(r"\d+ edges in kouvola", lines[4]) and int(lines[4].split()[0]) > 0  # the plugged-in command
