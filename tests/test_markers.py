import pytest

from rekit.data.schema import Entity, Record
from rekit.encoding.markers import first_segment, mark, new_tokens

SENT = "〈Something〉는 조지 해리슨이 쓰고 비틀즈가 1969년 앨범 《Abbey Road》에 담은 노래다."
REC = Record("0", SENT, subject=Entity("비틀즈", 24, 27, "ORG"), object=Entity("조지 해리슨", 13, 19, "PER"))

EXPECTED = {
    "none": SENT,
    "entity_marker": "〈Something〉는 [E2] 조지 해리슨 [/E2]이 쓰고 [E1] 비틀즈 [/E1]가 1969년 앨범 《Abbey Road》에 담은 노래다.",  # noqa: E501 (Korean test data kept whole)
    "entity_marker_punct": "〈Something〉는 # 조지 해리슨 #이 쓰고 @ 비틀즈 @가 1969년 앨범 《Abbey Road》에 담은 노래다.",
    "typed_entity_marker": "〈Something〉는 <O:PER> 조지 해리슨 </O:PER>이 쓰고 <S:ORG> 비틀즈 </S:ORG>가 1969년 앨범 《Abbey Road》에 담은 노래다.",  # noqa: E501 (Korean test data kept whole)
    "typed_entity_marker_punct": "〈Something〉는 # ^ PER ^ 조지 해리슨 #이 쓰고 @ * ORG * 비틀즈 @가 1969년 앨범 《Abbey Road》에 담은 노래다.",  # noqa: E501 (Korean test data kept whole)
}


@pytest.mark.parametrize("scheme", EXPECTED)
def test_marker_strings_and_spans(scheme):
    m = mark(REC, scheme)
    assert m.text == EXPECTED[scheme]
    subj = m.text[m.subj_span[0] : m.subj_span[1]]
    obj = m.text[m.obj_span[0] : m.obj_span[1]]
    assert "비틀즈" in subj and "조지 해리슨" in obj
    if scheme != "none":
        assert subj[0] in "[<@" and obj[0] in "[<#"
    else:
        assert subj == "비틀즈" and obj == "조지 해리슨"


def test_markers_use_offsets_not_search():
    # The entity text occurs twice; the offsets point at the second occurrence.
    s = "삼성 직원이 삼성에서 일한다"
    r = Record("1", s, Entity("삼성", 7, 9, "ORG"), Entity("직원", 3, 5, "POH"))
    m = mark(r, "entity_marker_punct")
    assert m.text == "삼성 # 직원 #이 @ 삼성 @에서 일한다"
    assert m.subj_char == m.text.index("@")


def test_nested_entities_are_properly_nested():
    r = Record("2", "서울대학교 병원에서", Entity("서울대학교 병원", 0, 8, "ORG"), Entity("서울", 0, 2, "LOC"))
    m = mark(r, "typed_entity_marker_punct")
    assert m.text == "@ * ORG * # ^ LOC ^ 서울 #대학교 병원 @에서"
    assert m.text[m.subj_span[0] : m.subj_span[1]] == "@ * ORG * # ^ LOC ^ 서울 #대학교 병원 @"
    assert m.text[m.obj_span[0] : m.obj_span[1]] == "# ^ LOC ^ 서울 #"


def test_first_segments():
    assert first_segment(REC, "auto", "none", "[SEP]") == "비틀즈[SEP]조지 해리슨"
    assert first_segment(REC, "auto", "typed_entity_marker_punct", "[SEP]") is None
    # 비틀즈 ends in a vowel -> 와; 단체 ends in a vowel -> 와
    assert first_segment(REC, "query", "typed_entity_marker_punct", "[SEP]") == "비틀즈와 조지 해리슨의 관계는 단체와 사람의 관계이다."  # noqa: E501 (Korean test data kept whole)
    r = Record("3", "x", Entity("해리슨", 0, 1, "PER"), Entity("비틀즈", 0, 1, "ORG"))
    # 해리슨 ends in ㄴ -> 과; 사람 ends in ㅁ -> 과
    assert first_segment(r, "query", "none", "[SEP]") == "해리슨과 비틀즈의 관계는 사람과 단체의 관계이다."


def test_new_tokens():
    assert new_tokens("entity_marker") == ["[E1]", "[/E1]", "[E2]", "[/E2]"]
    assert set(new_tokens("typed_entity_marker", ["PER", "ORG"])) == {
        "<S:PER>", "</S:PER>", "<O:PER>", "</O:PER>", "<S:ORG>", "</S:ORG>", "<O:ORG>", "</O:ORG>"}
    assert new_tokens("typed_entity_marker_punct", ["PER"]) == []
