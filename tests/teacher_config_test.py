"""Teacher configs (gin files): the shipped ones load; malformed ones name the file and the field;
an API key can never be written into one."""

import pytest

from dssb.teacher import config

HEADER = ('from __gin__ import dynamic_registration\n'
          'from dssb.teacher import config\n')


@pytest.fixture
def teacher_env(monkeypatch):
  monkeypatch.setenv('DSSB_TEACHER_NAME', 'llama')
  monkeypatch.setenv('DSSB_TEACHER_MODEL', 'meta-llama/Llama-3.1-8B')
  monkeypatch.delenv('OPENAI_BASE_URL', raising=False)


def _gin(tmp_path, body, name='teacher.gin'):
  path = tmp_path / name
  path.write_text(HEADER + body)
  return str(path)


def test_shipped_configs_load(teacher_env, monkeypatch):
  cfg = config.load('openai_compatible')
  assert (cfg.name, cfg.model, cfg.endpoint) == ('llama', 'meta-llama/Llama-3.1-8B',
                                                 'completions')
  assert cfg.base_url == 'http://127.0.0.1:8000/v1'  # ${OPENAI_BASE_URL:-default}
  monkeypatch.setenv('OPENAI_BASE_URL', 'http://10.0.0.2:8080/v1')
  chat = config.load('openai_chat', ['TeacherConfig.n=5', 'TeacherConfig.temperature=0.7'])
  assert (chat.endpoint, chat.n, chat.temperature, chat.base_url) == (
      'chat', 5, 0.7, 'http://10.0.0.2:8080/v1')
  assert config.load('dssb_serve').prompt == 'bare_v1'
  monkeypatch.setenv('DSSB_TEACHER_CHECKPOINT', '/models/flan-t5-xxl')
  assert config.load('dssb_checkpoint').backend == 'dssb'
  assert cfg.sampling(('\n\nQ:',)) == {'max_tokens': 256, 'temperature': 0.0,
                                       'stop': ['\n\nQ:']}


@pytest.mark.parametrize('body,needle', [
    ("config.TeacherConfig:\n  name = 'x'\n  model = 'm'\n  temprature = 0.5\n",
     "doesn't have a parameter named 'temprature'"),
    ("config.TeacherConfig:\n  model = 'm'\n", "field 'name' is required"),
    ("config.TeacherConfig:\n  name = 'x'\n  model = 'm'\n  n = '3'\n",
     "field 'n' is '3' (str), expected int"),
    ("config.TeacherConfig:\n  name = 'x'\n  model = 'm'\n  n = 0\n", "field 'n' is 0"),
    ("config.TeacherConfig:\n  name = 'x'\n  model = 'm'\n  temperature = -0.5\n",
     "field 'temperature' is -0.5, expected >= 0"),
    ("config.TeacherConfig:\n  name = 'x'\n  model = 'm'\n  endpoint = 'responses'\n",
     "field 'endpoint' is 'responses', expected one of ('completions', 'chat')"),
    ("config.TeacherConfig:\n  name = 'x'\n  model = 'm'\n  backend = 'vllm'\n",
     "field 'backend' is 'vllm'"),
    ("config.TeacherConfig:\n  name = 'my teacher'\n  model = 'm'\n",
     "field 'name': Bad teacher name 'my teacher'"),
    ("config.TeacherConfig:\n  name = 'x'\n", "field 'model' is empty"),
    ("config.TeacherConfig:\n  name = 'x'\n  backend = 'dssb'\n", "field 'checkpoint' is empty"),
    ("config.TeacherConfig:\n  name = 'x'\n  model = 'm'\n  stop = 'Q:'\n",
     "field 'stop' is 'Q:' (str), expected a list of strings or None"),
    ("config.TeacherConfig:\n  name = 'x'\n  model = '${NO_SUCH_VAR_FOR_DSSB}'\n",
     "field 'model' reads ${NO_SUCH_VAR_FOR_DSSB}, which is not set"),
    ("config.TeacherConfig:\n  name = 'x'\n  model = 'm\n", 'teacher.gin'),
])
def test_malformed_configs_name_file_and_field(tmp_path, body, needle):
  path = _gin(tmp_path, body)
  with pytest.raises(config.ConfigError) as e:
    config.load(path)
  assert str(e.value).startswith(path) and needle in str(e.value), str(e.value)


def test_an_api_key_in_a_config_is_refused_without_echoing_it(tmp_path):
  secret = 'sk-live-0123456789abcdef'
  path = _gin(tmp_path, f"config.TeacherConfig:\n  name = 'x'\n  model = 'm'\n"
                        f"  api_key = '{secret}'\n")
  with pytest.raises(config.ConfigError) as e:
    config.load(path)
  assert 'api_key_env' in str(e.value) and secret not in str(e.value)
  with pytest.raises(config.ConfigError) as e:
    config.load(_gin(tmp_path, "config.TeacherConfig:\n  name = 'x'\n  model = 'm'\n"),
                [f"TeacherConfig.api_key='{secret}'"])
  assert secret not in str(e.value)


def test_unknown_config_name_lists_the_shipped_ones():
  with pytest.raises(config.ConfigError, match='openai_compatible.gin'):
    config.load('no_such_teacher')
