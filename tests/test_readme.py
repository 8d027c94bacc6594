"""The README and benchmarks/README.md stay true to the checkout they describe."""

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / 'README.md').read_text()
PYPROJECT = tomllib.loads((ROOT / 'pyproject.toml').read_text())


def test_readme_opens_with_the_two_make_commands():
  first_block = re.search(r'```bash\n(.*?)```', README, flags=re.DOTALL).group(1)
  commands = [line.split('#')[0].strip() for line in first_block.splitlines()]
  assert commands == ['make demo', 'make test']
  assert README.index('```bash') < README.index('\n## ')  # before any section


def test_readme_shows_how_to_install_every_extra():
  assert 'pip install .  ' in README
  for extra in PYPROJECT['project']['optional-dependencies']:
    assert f"pip install '.[{extra}]'" in README, f'README.md: say how to install [{extra}]'


def test_readme_states_the_jax_floor_of_pyproject():
  floors = [d for d in PYPROJECT['project']['dependencies'] if d.startswith('jax>=')]
  assert floors == ['jax>=0.10'] and '`jax>=0.10`' in README


def test_readme_links_resolve():
  for target in re.findall(r'\]\(([^)#\s]+)', README):
    if '://' not in target:
      assert (ROOT / target).exists(), f'README.md links to missing {target}'


def test_readmes_name_no_machine_paths():
  for path in (ROOT / 'README.md', ROOT / 'benchmarks' / 'README.md'):
    found = re.findall(r'(?<![\w.])/(?:work|root|tmp|home)/\S*', path.read_text())
    assert not found, f'{path.relative_to(ROOT)} names paths of one machine: {found}'
