"""Tiny local models, built from seed conversations in seconds, so the whole loop runs offline on a CPU.

`build_tiny_models(DIR)` writes, each with `save_pretrained` and loadable like any Hub model:
- `DIR/generator`: a byte-level BPE tokenizer trained on the seed text with a ChatML template (with `{% generation %}`
  markers), and a small Llama warm-started with TRL's `SFTTrainer` on the paper's generator prompts (zero- and
  one-shot) and on faithfulness questions, so that most samples parse as `User 1:` / `User 2:` conversations;
- `DIR/nli`: a 3-label (entailment, neutral, contradiction) sequence classifier trained on persona pairs
  (same sentence, rule-negated sentence, unrelated sentence);
- `DIR/toxicity`: a 2-label (non-toxic, toxic) classifier trained on seed utterances and insult-laced copies.
The classifiers are stand-ins with a learned, checkable behaviour, not models of real NLI or toxicity.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from pathlib import Path

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|sep|>"]
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
INSULTS = [
    "you are an idiot",
    "shut up, you stupid loser",
    "I hate you and everyone like you",
    "you are worthless trash",
    "nobody cares, moron",
    "go away, you pathetic fool",
    "you disgust me",
    "what a dumb thing to say, imbecile",
]
FAITHFUL_ANSWER = "No, the conversation is consistent with both profiles."
UNFAITHFUL_ANSWER = "Yes, the conversation contradicts the profiles."


def negate(sentence: str) -> str:
    """A rule-based negation of a first-person persona sentence (training data for the tiny NLI model)."""
    s = sentence.strip().rstrip(".")
    rules = [
        (r"^I am not (.*)", r"I am \1"),
        (r"^I do not (.*)", r"I \1"),
        (r"^I don't (.*)", r"I \1"),
        (r"^I (am|was|have been|will|can|could|would) (.*)", r"I \1 not \2"),
        (r"^I'm (.*)", r"I am not \1"),
        (r"^I (\w+) (.*)", r"I do not \1 \2"),
        (r"^My (.*?) (is|are|was|were) (.*)", r"My \1 \2 not \3"),
    ]
    for pattern, replacement in rules:
        if re.match(pattern, s, flags=re.IGNORECASE):
            return re.sub(pattern, replacement, s, count=1, flags=re.IGNORECASE) + "."
    return f"It is not true that {s[0].lower() + s[1:]}."


# -- tokenizer ------------------------------------------------------------------------------------------------------
def train_tokenizer(texts: list[str], vocab_size: int = 2048):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    sep = backend.token_to_id("<|sep|>")
    backend.post_processor = processors.TemplateProcessing(
        single="$A", pair="$A <|sep|> $B", special_tokens=[("<|sep|>", sep)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        sep_token="<|sep|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=2048,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# -- training data --------------------------------------------------------------------------------------------------
def generator_rows(records: list[dict], rng: random.Random) -> list[dict]:
    """Prompt-completion rows: zero-shot for every record; one-shot (a short example) and faithfulness questions
    (own profiles -> "No", another pair's -> "Yes") for every third, to keep the warm-start to a minute of CPU."""
    from .critic.faithfulness import faithfulness_question
    from .training.data import sft_row

    rows = []
    for index, record in enumerate(records):
        rows.append(sft_row(record))
        if index % 3:
            continue
        example = records[(index + 1 + rng.randrange(len(records) - 1)) % len(records)]
        rows.append(sft_row(record, [{**example, "turns": example["turns"][:6]}]))
        other = records[(index + 1 + rng.randrange(len(records) - 1)) % len(records)]
        mismatched = {**record, "user1_persona": other["user1_persona"], "user2_persona": other["user2_persona"]}
        for shown, answer in ((record, FAITHFUL_ANSWER), (mismatched, UNFAITHFUL_ANSWER)):
            rows.append(
                {
                    "prompt": [{"role": "user", "content": faithfulness_question(shown)}],
                    "completion": [{"role": "assistant", "content": answer}],
                }
            )
    rng.shuffle(rows)
    return rows


def nli_examples(records: list[dict], rng: random.Random) -> tuple[list[tuple[str, str]], list[int]]:
    attributes = sorted({a for r in records for a in r["user1_persona"] + r["user2_persona"]})
    pairs, labels = [], []
    for attribute in attributes:
        other = rng.choice(attributes)
        pairs += [(attribute, attribute), (attribute, negate(attribute)), (negate(attribute), attribute)]
        labels += [0, 2, 2]
        if other != attribute:
            pairs.append((attribute, other))
            labels.append(1)
    return pairs, labels


def toxicity_examples(records: list[dict], rng: random.Random) -> tuple[list[str], list[int]]:
    utterances = [t["text"] for r in records for t in r["turns"]][:3000]
    texts, labels = [], []
    for utterance in utterances:
        texts.append(utterance)
        labels.append(0)
        if rng.random() < 0.5:
            insult = rng.choice(INSULTS)
            texts.append(f"{insult}. {utterance}" if rng.random() < 0.5 else f"{utterance} {insult}!")
            labels.append(1)
    return texts, labels


# -- models ---------------------------------------------------------------------------------------------------------
def _llama_config(tokenizer, hidden: int, layers: int, **extra):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def train_classifier(model, tokenizer, inputs: list, labels: list[int], steps: int, seed: int) -> float:
    """A few AdamW steps on (text or text-pair, label) examples; returns the final training accuracy estimate."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    tokenizer.padding_side = "right"
    model.train()
    correct = seen = 0
    for step in range(steps):
        batch = torch.randint(len(inputs), (32,), generator=generator).tolist()
        texts = [inputs[i] for i in batch]
        if isinstance(texts[0], tuple):
            encoded = tokenizer([t[0] for t in texts], [t[1] for t in texts], padding=True, return_tensors="pt")
        else:
            encoded = tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        target = torch.tensor([labels[i] for i in batch])
        output = model(**encoded, labels=target)
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= steps - 20:
            correct += (output.logits.argmax(-1) == target).sum().item()
            seen += len(batch)
    model.eval()
    return correct / max(seen, 1)


def _classifier(tokenizer, labels: list[str], seed: int):
    import torch
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = _llama_config(
        tokenizer,
        hidden=64,
        layers=2,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    return LlamaForSequenceClassification(config)


def warm_start_generator(model, tokenizer, rows: list[dict], output_dir: Path, steps: int, seed: int) -> list[float]:
    """Full fine-tuning with TRL's SFTTrainer (the same trainer the loop uses for LoRA)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(output_dir / "warm-start"),
        max_steps=steps,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        weight_decay=0.0,
        max_length=640,
        completion_only_loss=True,
        logging_steps=max(1, steps // 10),
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        seed=seed,
        dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.train()
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def measure_parse_rate(model, tokenizer, records: list[dict], pairs: int = 16, seed: int = 0) -> float:
    """Share of one-shot samples (paper prompt, top-k 40, temperature 0.7) that parse as a conversation."""
    from .data.prompts import generator_prompt, render
    from .generation.candidates import parse_candidate
    from .generation.engine import sample_conversations

    targets = records[:pairs]
    prompts = [render(tokenizer, generator_prompt(t, [records[-1 - i]])) for i, t in enumerate(targets)]
    samples = sample_conversations(
        model,
        tokenizer,
        prompts,
        [t["pair_id"] for t in targets],
        n=2,
        generation_kwargs={"do_sample": True, "top_k": 40, "temperature": 0.7, "max_new_tokens": 320},
        batch_tokens=1 << 16,
        seed=seed,
    )
    flags = [parse_candidate(s.text, min_turns=4)["parsed"] for group in samples for s in group]
    return sum(flags) / len(flags)


def build_tiny_models(
    output_dir: str | Path,
    seed_path: str | Path | None = None,
    *,
    warm_start_steps: int = 150,
    classifier_steps: int = 150,
    max_conversations: int = 300,
    seed: int = 0,
) -> dict:
    """Build generator, NLI and toxicity models under `output_dir`; returns (and saves) a build report."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    from .data import read_seed

    start = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    seed_path = seed_path or default_seed_path()
    records = read_seed(str(seed_path), limit=max_conversations).records
    if len(records) < 8:
        raise ValueError(
            f"Need at least 8 seed conversations to build tiny models, got {len(records)} from {seed_path}."
        )
    rng = random.Random(seed)
    rows = generator_rows(records, rng)

    logger.info("Training the tokenizer on %d seed conversations.", len(records))
    corpus = (
        [message["content"] for row in rows for message in row["prompt"] + row["completion"]]
        + [f"{a} {negate(a)}" for r in records for a in r["user1_persona"]]
        + INSULTS
    )
    tokenizer = train_tokenizer(corpus)

    torch.manual_seed(seed)
    model = LlamaForCausalLM(_llama_config(tokenizer, hidden=128, layers=2))
    logger.info("Warm-starting the tiny generator (%d SFT steps on %d rows).", warm_start_steps, len(rows))
    losses = warm_start_generator(model, tokenizer, rows, output_dir, warm_start_steps, seed)
    model.generation_config = GenerationConfig(
        do_sample=True,
        top_k=40,
        temperature=0.7,
        max_new_tokens=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.eval()
    parse_rate = measure_parse_rate(model, tokenizer, records, seed=seed)
    model.save_pretrained(output_dir / "generator")
    tokenizer.save_pretrained(output_dir / "generator")

    accuracies = {}
    for name, labels, (inputs, targets) in (
        ("nli", ["entailment", "neutral", "contradiction"], nli_examples(records, rng)),
        ("toxicity", ["non-toxic", "toxic"], toxicity_examples(records, rng)),
    ):
        logger.info("Training the tiny %s classifier on %d examples.", name, len(inputs))
        classifier = _classifier(tokenizer, labels, seed)
        accuracies[name] = train_classifier(classifier, tokenizer, inputs, targets, classifier_steps, seed)
        classifier.save_pretrained(output_dir / name)
        tokenizer.save_pretrained(output_dir / name)

    report = {
        "seed_path": str(seed_path),
        "seed_conversations": len(records),
        "vocab_size": len(tokenizer),
        "generator_parameters": sum(p.numel() for p in model.parameters()),
        "warm_start_steps": warm_start_steps,
        "warm_start_losses": losses,
        "parse_rate": parse_rate,
        "classifier_train_accuracy": accuracies,
        "seconds": round(time.perf_counter() - start, 1),
    }
    (output_dir / "build.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def default_seed_path() -> Path:
    """The SPC sample shipped inside the package (CC BY 4.0; see data/sample/SOURCE.md)."""
    return Path(__file__).parent / "data" / "sample" / "spc_valid_sample.csv"


def tiny_models_ready(directory: str | Path) -> bool:
    return (Path(directory) / "build.json").exists()
