"""The README's Python examples run as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})


def test_readme_demo_configuration_is_the_demo_in_full():
    import tomllib

    from selfconsume import study

    text = README.read_text()
    block = re.search(r"the demo's, `selfconsume.study.DEMO`, in full\):\n\n```toml\n(.*?)```",
                      text, flags=re.S).group(1)
    assert tomllib.loads(block) == tomllib.loads(study.DEMO)
