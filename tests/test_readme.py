"README.md is written from nbs/index.ipynb (`make readme`); this fails when they drift apart."
import importlib.util
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def test_readme_in_step_with_index():
    spec = importlib.util.spec_from_file_location('build_readme', root/'.ci'/'build_readme.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    assert (root/'README.md').read_text() == m.readme(), 'README.md is stale: run `make readme` and commit it'

def test_readme_states_the_commands():
    text = (root/'README.md').read_text()
    assert '```sh\nmake test\n```' in text and 'make demo' in text
