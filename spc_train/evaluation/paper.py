"""The paper's numbers (PAPER.md §3 and Table 1), shown beside ours in the report: kept apart from the code that
draws the report so they can be checked against the paper in one place."""

# The paper's numbers in the units of the metrics here (shares as fractions), for `write_report(paper=...)`.
# T = the paper's table (PAPER.md §3); "it.N" = SPC iteration N; "SPC" = the released SPC.
PAPER_REFERENCES: dict[str, str] = {
    "toxicity_weak": "PC 0.707 · SPC it.3 0.909 (T9)",
    "toxicity_medium": "PC 0.289 · SPC it.3 0.091 (T9)",
    "toxicity_strong": "PC 0.0035 · SPC it.3 0.0001 (T9)",
    "ir_self_to_seed_none": "0.194 (SPC→PC; PC→PC 0.187, T2)",
    "ir_self_to_seed_persona": "0.396 (SPC→PC; PC→PC 0.369, T2)",
    "detection_lose": "it.1 0.172 · it.3 0.088 (T3)",
    "detection_win": "it.1 0.301 · it.3 0.352 (T3)",
    "detection_tie": "it.1 0.527 · it.3 0.560 (T3)",
    "extraction_precision": "it.1 0.785 (human, T3)",
    "extraction_recall": "it.1 0.364 (human, T18)",
    "llm_eval_content": "PC 81.96 · SPC 88.84 (T15)",
    "llm_eval_grammar": "PC 87.12 · SPC 93.64 (T15)",
    "llm_eval_relevance": "PC 86.82 · SPC 94.16 (T15)",
    "llm_eval_appropriateness": "PC 86.99 · SPC 95.84 (T15)",
    "gpt_score_fluency": "PC 67.04 · SPC 98.89 (T15)",
    "gpt_score_consistent": "PC 3.47 · SPC 64.25 (T15)",
    "gpt_score_coherent": "PC 69.41 · SPC 100 (T15)",
    "gpt_score_depth": "PC 5.40 · SPC 37.36 (T15)",
    "gpt_score_diversity": "PC 72.98 · SPC 96.42 (T15)",
    "gpt_score_likeable": "PC 36.53 · SPC 91.04 (T15)",
    "g_eval_relevance": "PC 2.288 · SPC 2.992 (T15)",
    "g_eval_fluency": "PC 1.928 · SPC 2.002 (T15)",
    "g_eval_consistent": "PC 1.736 · SPC 2.651 (T15)",
    "g_eval_coherent": "PC 2.505 · SPC 2.997 (T15)",
    "g_eval_faithfulness": "PC 1.754 · SPC 2.959 (T15)",
}

# The paper's Table 1 rows for Persona-Chat before and after expansion.
PAPER_PERSONA_SETS: dict[str, dict[str, float]] = {
    "paper: Persona-Chat (seed)": {
        "attributes": 4723,
        "clusters": 323,
        "inter_cluster_distance": 0.836,
        "mean_length_tokens": 7.65,
    },
    "paper: SPC (PC expanded)": {
        "attributes": 10371,
        "clusters": 553,
        "inter_cluster_distance": 0.863,
        "mean_length_tokens": 15.9,
    },
}
