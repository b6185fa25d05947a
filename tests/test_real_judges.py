"""Real weights of a stronger local judge: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, dequantized to float32), as a
recipe names it (docs/real-judges.md), answering persona-consistency questions through `Judge.option_probabilities`.

The .gguf file is 1.1 GB and optional (`bash scripts/setup_qwen_judge.sh`), so the tests skip without it. The model
takes about 7 GB of memory. Its dense copy (`gguf_dense.py`, 7 GB) is kept next to it, in `dense/`, unless
SPC_TRAIN_GGUF_CACHE says otherwise: the private HF_HOME of each test session (conftest.py) would make every session
dequantize it again (3-4 min on 2 busy CPU cores). With the copy there, loading takes seconds and the two questions
10-40 s.
"""

import os
from pathlib import Path

import pytest

from spc_train.configs import CriticConfig, JudgeConfig

FOLDER = Path(__file__).resolve().parents[1] / "models" / "qwen2.5-coder-1.5b-instruct"
FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
SIZE = 1_117_320_768  # the 22 joined parts
PRESENT = (FOLDER / FILE).is_file() and (FOLDER / FILE).stat().st_size == SIZE
pytestmark = [
    pytest.mark.skipif(
        not PRESENT,
        reason=f"the Qwen2.5-Coder-1.5B-Instruct GGUF is not at {FOLDER / FILE}: bash scripts/setup_qwen_judge.sh",
    ),
    pytest.mark.slow,
]

QUESTION = (
    "Persona: I am a nurse.\nUtterance: {utterance}\nIs the utterance consistent with the persona? Answer Yes or No."
)
CONSISTENT = "I work at the hospital taking care of patients."
INCONSISTENT = "I have never been inside a hospital, I am a software engineer."


@pytest.fixture(scope="module")
def spec():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SPC_TRAIN_GGUF_CACHE", os.environ.get("SPC_TRAIN_GGUF_CACHE") or str(FOLDER / "dense"))
        yield JudgeConfig(name_or_path=str(FOLDER), gguf_file=FILE, dtype="float32")


@pytest.fixture(scope="module")
def tokenizer(spec):
    from spc_train.models import load_tokenizer

    return load_tokenizer(spec)


def test_the_critic_can_ask_it_every_answer_option(spec, tokenizer):
    from spc_train.critic.registry import EXPERTS, check_experts
    from spc_train.models import check_spec

    check_spec(spec, "judge")  # the file is there and transformers loads qwen2 from GGUF
    check_experts(CriticConfig(experts=[name for name in EXPERTS if name != "faithfulness_nli"]), tokenizer)
    assert tokenizer.chat_template and tokenizer.model_max_length == 32768


def test_it_answers_a_persona_question_on_the_options_and_tells_consistent_from_inconsistent(spec, tokenizer):
    import torch

    from spc_train.judge import Judge
    from spc_train.models import load_causal_lm

    model = load_causal_lm(spec)
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.dtype == torch.float32
    judge = Judge(model, tokenizer)
    questions = [QUESTION.format(utterance=CONSISTENT), QUESTION.format(utterance=INCONSISTENT)]
    (consistent_yes, _), (inconsistent_yes, _) = judge.option_probabilities(questions, ["Yes", "No"])
    assert min(judge.last_option_mass) > 0.9  # measured 0.998 and 0.996: it answers Yes or No, nothing else
    assert consistent_yes > 0.5 > inconsistent_yes  # measured 0.94 and 0.09
