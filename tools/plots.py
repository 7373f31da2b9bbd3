"""`dvc plots show` that renders offline: the vega scripts inlined into the page instead of loaded from a CDN.

    python -m tools.plots [show|diff] [more dvc plots arguments]   (make plots)

dvc-render's page loads vega, vega-lite and vega-embed from cdn.jsdelivr.net, so it is blank on a machine
without internet (a pod with egress rules, a laptop offline). The same versions are fetched once from npm
into .cache/vega/ and written into an HTML template that `dvc plots --html-template` fills; the page then
needs nothing but itself. Output: dvc_plots/index.html.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.errors import PipelineError

# the versions dvc-render's own page loads (dvc_render/vega.py)
PACKAGES = {"vega": "5.20.2", "vega-lite": "5.2.0", "vega-embed": "6.18.2"}
SCRIPTS = {"vega": "build/vega.min.js", "vega-lite": "build/vega-lite.min.js", "vega-embed": "build/vega-embed.min.js"}
VENDOR = Path(".cache/vega")
TEMPLATE = Path("dvc_plots/offline_template.html")


def vendor() -> Path:
    modules = VENDOR / "node_modules"
    if all((modules / name / path).is_file() for name, path in SCRIPTS.items()):
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise PipelineError("npm not found: it fetches the vega scripts once (apt-get install npm)")
    specs = [f"{name}@{version}" for name, version in PACKAGES.items()]
    # vega-embed 6.18 declares peer ranges that npm 7+ refuses for these exact versions; they work together.
    result = subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund", "--legacy-peer-deps", "--prefix",
                             str(VENDOR), *specs], capture_output=True, text=True)
    if result.returncode != 0:
        raise PipelineError(f"npm install {' '.join(specs)} failed: {result.stderr.strip().splitlines()[-1:]}")
    return modules


def inline_script(path: Path) -> str:
    code = path.read_text(encoding="utf-8").replace("</script", "<\\/script")  # cannot end the tag early
    return f"<script>{code}</script>"


def template(modules: Path) -> str:
    scripts = "\n".join(inline_script(modules / name / path) for name, path in SCRIPTS.items())
    # no {scripts} placeholder: that is where dvc-render would put its CDN <script src=...> tags
    return ("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>DVC plots</title>\n"
            f"{scripts}\n</head>\n<body>\n{{plot_divs}}\n</body>\n</html>\n")


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] in ("show", "diff") else "show"
    extra = sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] in ("show", "diff") else sys.argv[1:]
    try:
        page = template(vendor())
    except PipelineError as exc:
        sys.exit(f"error: {exc}")
    TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    TEMPLATE.write_text(page, encoding="utf-8")
    sys.exit(subprocess.call(["dvc", "plots", command, "--html-template", str(TEMPLATE), "-o", "dvc_plots", *extra]))


if __name__ == "__main__":
    main()
