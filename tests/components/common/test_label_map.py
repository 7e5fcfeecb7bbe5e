"""The label map: its three forms round-trip hostile names and are read by their real consumers."""

import csv
import io
import json

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from cvat_kfp.components.common.label_map import (
    CSV_FILE,
    JSON_FILE,
    PBTXT_FILE,
    LabelMap,
    LabelMapError,
)

# Every name here has broken some label map writer or reader somewhere.
HOSTILE_NAMES = (
    "plain",
    'double "quoted"',
    "single 'quoted'",
    "comma, separated",
    "back\\slash",
    "trailing backslash\\",
    "\\",
    '\\"',
    "\\n (a backslash and an n)",
    "two\nlines",
    "\nleading newline",
    "tab\tseparated",
    "pipe|name",
    "  padded  ",
    " leading space",
    "trailing space ",
    "🐱 cat",
    "猫",
    "café",
    "Ünïcödé Ωμέγα",
    '"',
    "'",
    ",",
    "#not a comment",
    "item { id: 99 }",
    "a\"b'c,d\\e|f\ng\th",
    "bell\x07 and nul\x00",
)
FORMS = ("pbtxt", "csv", "json")


def _write(label_map: LabelMap, form: str) -> str:
    return {"pbtxt": label_map.to_pbtxt, "csv": label_map.to_csv, "json": label_map.to_json}[form]()


def _read(text: str, form: str) -> LabelMap:
    readers = {"pbtxt": LabelMap.from_pbtxt, "csv": LabelMap.from_csv, "json": LabelMap.from_json}
    return readers[form](text)


@pytest.fixture(scope="module")
def hostile() -> LabelMap:
    return LabelMap(HOSTILE_NAMES)


# --- the in-memory object ---------------------------------------------------------------------


def test_ids_are_one_based_in_name_order():
    label_map = LabelMap(("cat", "dog", "bird"))
    assert len(label_map) == 3
    assert label_map.items() == [(1, "cat"), (2, "dog"), (3, "bird")]
    assert label_map.id_of("dog") == 2
    assert label_map.name_of(3) == "bird"


def test_unknown_name_and_out_of_range_id_raise_key_error():
    label_map = LabelMap(("cat", "dog"))
    with pytest.raises(KeyError, match="'horse' is not in the label map"):
        label_map.id_of("horse")
    for class_id in (0, 3, -1):
        with pytest.raises(KeyError, match=r"outside the label map's 1\.\.2"):
            label_map.name_of(class_id)


def test_names_given_as_a_list_become_a_tuple():
    label_map = LabelMap(["cat", "dog"])
    assert label_map.names == ("cat", "dog")
    assert label_map == LabelMap(("cat", "dog"))


def test_categories_round_trip():
    label_map = LabelMap(("cat", "dog"))
    categories = label_map.to_categories()
    assert categories == [
        {"id": 1, "name": "cat", "supercategory": ""},
        {"id": 2, "name": "dog", "supercategory": ""},
    ]
    assert LabelMap.from_categories(list(reversed(categories))) == label_map


def test_from_pairs_accepts_any_order():
    assert LabelMap.from_pairs([(2, "b"), (3, "c"), (1, "a")]).names == ("a", "b", "c")


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
def test_each_form_round_trips_hostile_names(hostile, form):
    assert _read(_write(hostile, form), form).names == HOSTILE_NAMES


@pytest.mark.parametrize("form", FORMS)
def test_each_form_round_trips_a_single_hostile_name(form):
    # Alone, each name is also the first and last row: no help from neighbours.
    for name in HOSTILE_NAMES:
        label_map = LabelMap((name,))
        assert _read(_write(label_map, form), form).names == (name,), repr(name)


def test_save_writes_all_three_forms_and_load_reads_each(tmp_path, hostile):
    paths = hostile.save(tmp_path / "new" / "dir")
    assert paths == {
        "pbtxt": tmp_path / "new" / "dir" / PBTXT_FILE,
        "csv": tmp_path / "new" / "dir" / CSV_FILE,
        "json": tmp_path / "new" / "dir" / JSON_FILE,
    }
    for form, path in paths.items():
        assert path.is_file(), form
        assert LabelMap.load(path) == hostile, form
        assert LabelMap.load(str(path)) == hostile, form
    assert LabelMap.load(tmp_path / "new" / "dir") == hostile  # a directory means its JSON


def test_saved_files_are_utf8_without_escaping_non_ascii(tmp_path):
    paths = LabelMap(("猫", "🐱 cat")).save(tmp_path)
    for form, path in paths.items():
        text = path.read_bytes().decode("utf-8")
        assert "猫" in text and "🐱 cat" in text, form


def test_load_refuses_an_unknown_suffix(tmp_path):
    path = tmp_path / "label_map.txt"
    path.write_text("1,cat\n", encoding="utf-8")
    with pytest.raises(LabelMapError, match="unknown label map form"):
        LabelMap.load(path)


@pytest.mark.parametrize(
    "content, words", [("1,cat\n3,dog\n", "no gaps"), ("1,cat\n2,cat\n", "names must be unique")]
)
def test_load_names_the_file_in_errors(tmp_path, content, words):
    path = tmp_path / "classes.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(LabelMapError, match=words) as error:
        LabelMap.load(path)
    assert str(error.value).startswith(f"{path}: ")


# --- CSV: Model Garden's form -----------------------------------------------------------------


def test_csv_is_headerless_id_name_rows(hostile):
    text = hostile.to_csv()
    assert text.startswith("1,plain\n")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows == [[str(i), name] for i, name in hostile.items()]


def test_csv_reader_skips_blank_lines_and_takes_crlf():
    assert LabelMap.from_csv("1,cat\r\n\r\n2,dog\r\n\n").names == ("cat", "dog")


@pytest.fixture(scope="module")
def model_garden_decoder():
    module = pytest.importorskip("official.vision.dataloaders.tf_example_label_map_decoder")
    return module.TfExampleDecoderLabelMap


def _tf_example(class_texts: list[str]) -> bytes:
    """A 2x2 image with one box per class text, as Model Garden's decoder wants it."""
    import tensorflow as tf

    png = tf.io.encode_png(tf.zeros((2, 2, 3), tf.uint8)).numpy()
    n = len(class_texts)

    def floats(v):
        return tf.train.Feature(float_list=tf.train.FloatList(value=v))

    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=v))

    def strings(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=v))

    features = {
        "image/encoded": strings([png]),
        "image/height": ints([2]),
        "image/width": ints([2]),
        "image/source_id": strings([b"1"]),
        "image/object/bbox/xmin": floats([0.0] * n),
        "image/object/bbox/ymin": floats([0.0] * n),
        "image/object/bbox/xmax": floats([1.0] * n),
        "image/object/bbox/ymax": floats([1.0] * n),
        "image/object/is_crowd": ints([0] * n),
        "image/object/area": floats([1.0] * n),
        "image/object/class/text": strings([t.encode("utf-8") for t in class_texts]),
    }
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString()


def test_model_garden_reads_our_csv(tmp_path, hostile, model_garden_decoder):
    import tensorflow as tf

    csv_path = hostile.save(tmp_path)["csv"]
    decoder = model_garden_decoder(label_map=str(csv_path))

    # Its public path: class/text in a tf.Example becomes our ids (-1 would be "unknown").
    texts = list(reversed(HOSTILE_NAMES)) + ["not a class"]
    decoded = decoder.decode(tf.constant(_tf_example(texts)))
    classes = decoded["groundtruth_classes"].numpy().tolist()
    assert classes == [hostile.id_of(n) for n in reversed(HOSTILE_NAMES)] + [-1]

    # And its name -> id table holds exactly our map, nothing more.
    table = decoder._name_to_id_table
    assert int(table.size()) == len(hostile)
    looked_up = table.lookup(tf.constant(list(HOSTILE_NAMES))).numpy().tolist()
    assert looked_up == [i for i, _ in hostile.items()]


def test_model_garden_refuses_what_we_refuse_to_write():
    # A carriage return cannot survive Model Garden's reader (tf.io.gfile drops every \r), so the
    # label map refuses it up front instead of writing a CSV that silently loses the class.
    for name in ("crlf\r\nname", "cr\rname", "\rx"):
        with pytest.raises(LabelMapError, match="carriage return"):
            LabelMap(("ok", name))


# --- pbtxt: the TF Object Detection API form --------------------------------------------------


@pytest.fixture(scope="module")
def string_int_label_map():
    """The TFOD StringIntLabelMap message class, built here so no TFOD install is needed."""
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="cvat_kfp_test/string_int_label_map.proto",
        package="cvat_kfp_test",
        syntax="proto2",
    )
    item = proto.message_type.add(name="StringIntLabelMapItem")
    item.field.add(name="name", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    item.field.add(name="id", number=2, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    item.field.add(
        name="display_name", number=3, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL
    )
    label_map = proto.message_type.add(name="StringIntLabelMap")
    label_map.field.add(
        name="item",
        number=1,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_REPEATED,
        type_name=".cvat_kfp_test.StringIntLabelMapItem",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("cvat_kfp_test.StringIntLabelMap")
    )


def test_protobuf_parses_our_pbtxt(hostile, string_int_label_map):
    message = text_format.Parse(hostile.to_pbtxt(), string_int_label_map())
    assert [(item.id, item.name) for item in message.item] == hostile.items()
    assert tuple(item.display_name for item in message.item) == HOSTILE_NAMES


@pytest.mark.parametrize("as_utf8", [False, True])
def test_we_read_what_protobuf_writes(hostile, string_int_label_map, as_utf8):
    message = string_int_label_map()
    for class_id, name in hostile.items():
        message.item.add(id=class_id, name=name, display_name=name)
    text = text_format.MessageToString(message, as_utf8=as_utf8)
    if not as_utf8:
        assert "\\347\\214\\253" in text  # 猫 as octal escapes: this really tests the unescaping
    assert LabelMap.from_pbtxt(text) == hostile


@pytest.mark.parametrize(
    "text",
    [
        # comments, `item:` with a colon, fields in any order, items in any id order
        '# a comment\nitem: {\n  name: "b"  # trailing comment\n  id: 2\n}\n'
        'item { id: 1 display_name: "A" name: "a" }\n',
        # single quotes, adjacent strings concatenate, hex and octal escapes
        "item { id: 1 name: 'it\\'s' }\nitem { id: 2 name: \"con\" 'cat' }\n"
        'item { id: 3 name: "\\x41\\102\\t\\"" }\n',
        # everything on one line
        'item{id:1 name:"a"}item{id:2 name:"b"}',
    ],
)
def test_pbtxt_variants_read_like_protobuf_reads_them(text, string_int_label_map):
    message = text_format.Parse(text, string_int_label_map())
    expected = LabelMap.from_pairs((item.id, item.name) for item in message.item)
    assert LabelMap.from_pbtxt(text) == expected


def test_pbtxt_display_name_is_written_as_the_name(string_int_label_map):
    message = text_format.Parse(LabelMap(("cat",)).to_pbtxt(), string_int_label_map())
    assert message.item[0].display_name == "cat"


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: LabelMap(()),
        lambda: LabelMap.from_pairs([]),
        lambda: LabelMap.from_csv(""),
        lambda: LabelMap.from_csv("\n\n"),
        lambda: LabelMap.from_json("[]"),
        lambda: LabelMap.from_pbtxt(""),
        lambda: LabelMap.from_pbtxt("# only a comment\n"),
        lambda: LabelMap.from_categories([]),
    ],
)
def test_empty_map_is_refused(make):
    with pytest.raises(LabelMapError, match="label map is empty"):
        make()


@pytest.mark.parametrize(
    "make, source",
    [
        (lambda: LabelMap(("cat", "dog", "cat")), ""),
        (lambda: LabelMap.from_csv("1,cat\n2,dog\n3,cat\n"), f"{CSV_FILE}: "),
        (lambda: LabelMap.from_json('[{"id": 1, "name": "cat"}, {"id": 3, "name": "cat"}, '
                                    '{"id": 2, "name": "dog"}]'), f"{JSON_FILE}: "),
        (lambda: LabelMap.from_pbtxt('item { id: 1 name: "cat" } item { id: 3 name: "cat" } '
                                     'item { id: 2 name: "dog" }'), f"{PBTXT_FILE}: "),
        (lambda: LabelMap.from_categories([{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"},
                                           {"id": 3, "name": "cat"}]), "categories: "),
    ],
)  # fmt: skip
def test_duplicate_names_are_refused_naming_the_source(make, source):
    with pytest.raises(LabelMapError) as error:
        make()
    assert (
        str(error.value) == f"{source}class name 'cat' is used by ids 1 and 3; names must be unique"
    )


def test_names_differing_only_in_spaces_or_case_are_distinct():
    assert len(LabelMap(("cat", "Cat", " cat", "cat "))) == 4


@pytest.mark.parametrize("blank", ["", " ", "\t\n", None, 5])
def test_blank_or_non_string_names_are_refused(blank):
    with pytest.raises(LabelMapError, match="class id 2 has a blank name"):
        LabelMap(("cat", blank))


@pytest.mark.parametrize(
    "make, source",
    [
        (lambda: LabelMap.from_csv("1,cat\n2,\n"), CSV_FILE),
        (lambda: LabelMap.from_csv('1,cat\n2,"  "\n'), CSV_FILE),
        (lambda: LabelMap.from_json('[{"id": 1, "name": "cat"}, {"id": 2}]'), JSON_FILE),
        (lambda: LabelMap.from_pbtxt('item { id: 1 name: "cat" } item { id: 2 name: "" }'),
         PBTXT_FILE),
    ],
)  # fmt: skip
def test_blank_names_are_refused_in_every_form(make, source):
    with pytest.raises(LabelMapError, match="class id 2 has a blank name") as error:
        make()
    assert str(error.value).startswith(f"{source}: ")


@pytest.mark.parametrize(
    "pairs, got",
    [
        ([(1, "a"), (3, "c")], "[1, 3]"),
        ([(2, "b"), (3, "c")], "[2, 3]"),
        ([(0, "background"), (1, "a")], "[0, 1]"),
        ([(-1, "a"), (1, "b")], "[-1, 1]"),
    ],
)
def test_ids_must_be_one_to_n(pairs, got):
    with pytest.raises(LabelMapError, match="no gaps") as error:
        LabelMap.from_pairs(pairs, "my source")
    message = str(error.value)
    assert message.startswith("my source: ")
    assert "0 is background" in message
    assert f"got {got}" in message


@pytest.mark.parametrize(
    "make, source",
    [
        (lambda: LabelMap.from_csv("0,bg\n1,cat\n"), CSV_FILE),
        (lambda: LabelMap.from_json('[{"id": 0, "name": "bg"}]'), JSON_FILE),
        (lambda: LabelMap.from_pbtxt('item { id: 0 name: "bg" }'), PBTXT_FILE),
        (lambda: LabelMap.from_categories([{"id": 2, "name": "x"}]), "categories"),
    ],
)
def test_every_reader_checks_ids_and_names_its_source(make, source):
    with pytest.raises(LabelMapError, match="no gaps") as error:
        make()
    assert str(error.value).startswith(f"{source}: ")


@pytest.mark.parametrize(
    "make",
    [
        lambda: LabelMap.from_pairs([(1, "a"), (1, "b")]),
        lambda: LabelMap.from_csv("1,a\n1,b\n"),
        lambda: LabelMap.from_json('[{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]'),
        lambda: LabelMap.from_pbtxt('item { id: 1 name: "a" } item { id: 1 name: "b" }'),
    ],
)
def test_duplicated_ids_are_refused(make):
    with pytest.raises(LabelMapError, match=r"id 1 is given twice \('a' and 'b'\)"):
        make()


@pytest.mark.parametrize(
    "make, bad",
    [
        (lambda: LabelMap.from_pairs([("1", "a")]), "'1'"),
        (lambda: LabelMap.from_pairs([(1.0, "a")]), "1.0"),
        (lambda: LabelMap.from_pairs([(True, "a")]), "True"),
        (lambda: LabelMap.from_json('[{"id": "1", "name": "a"}]'), "'1'"),
        (lambda: LabelMap.from_json('[{"id": 1.0, "name": "a"}]'), "1.0"),
        (lambda: LabelMap.from_json('[{"name": "a"}]'), "None"),
        (lambda: LabelMap.from_pbtxt('item { id: "1" name: "a" }'), "'1'"),
        (lambda: LabelMap.from_categories([{"id": None, "name": "a"}]), "None"),
    ],
)
def test_non_integer_ids_are_refused(make, bad):
    with pytest.raises(LabelMapError, match="is not an integer") as error:
        make()
    assert f"class id {bad} of 'a'" in str(error.value)


@pytest.mark.parametrize("bad_id", ["x", "1.0", "", "one"])
def test_non_integer_csv_ids_are_refused_with_their_row(bad_id):
    with pytest.raises(LabelMapError, match="is not an integer") as error:
        LabelMap.from_csv(f"1,cat\n{bad_id},dog\n")
    assert f"{CSV_FILE} row 2: id {bad_id!r}" in str(error.value)


@pytest.mark.parametrize(
    "text, row, got",
    [
        ("1,cat\n2,dog,extra\n", 2, "['2', 'dog', 'extra']"),
        ("1,cat\n2\n", 2, "['2']"),
        ("id,name,x\n", 1, "['id', 'name', 'x']"),
        ('1,"a",b\n', 1, "['1', 'a', 'b']"),
    ],
)
def test_malformed_csv_rows_are_refused(text, row, got):
    with pytest.raises(LabelMapError, match="expected `id,name`") as error:
        LabelMap.from_csv(text)
    assert f"row {row}: expected `id,name`, got {got}" in str(error.value)


def test_a_csv_header_row_is_refused():
    with pytest.raises(LabelMapError, match=r"row 1: id 'id' is not an integer"):
        LabelMap.from_csv("id,name\n1,cat\n")


@pytest.mark.parametrize(
    "text, words",
    [
        ("not json", ["not valid JSON"]),
        ('{"id": 1, "name": "a"}', ["expected a list"]),
        ('[["1", "a"]]', ["expected a list"]),
        ("[1, 2]", ["expected a list"]),
    ],
)
def test_malformed_json_is_refused(text, words):
    with pytest.raises(LabelMapError) as error:
        LabelMap.from_json(text, "labels.json")
    message = str(error.value)
    assert message.startswith("labels.json: ")
    for word in words:
        assert word in message


@pytest.mark.parametrize(
    "text, words",
    [
        ('item { id: 1 name: "a"', ["expected }", "end of file"]),
        ('item { id: 1 name: "a" } }', ["expected item", "'}'"]),
        ('items { id: 1 name: "a" }', ["expected item", "'items'"]),
        ('item id: 1 name: "a"', ["expected {", "'id'"]),
        ('item { id 1 name: "a" }', ["expected :", "'1'"]),
        ("item { id: 1 name: a }", ["expected str", "'a'"]),
        (
            'item { id: 1 name: "a" }\nitem { id: 2 name: "unterminated }\n',
            ["line 2", "cannot parse"],
        ),
        ('item { id: 1 name: "two\nlines" }', ["line 1", "cannot parse"]),
        ('item { id: 1.5 name: "a" }', ["cannot parse"]),
        ('item { id: 1 name: "a\\qb" }', ["unknown escape \\q"]),
        ('item { id: 1 name: "a\\xZZ" }', ["bad \\x escape"]),
        ('item { id: 1 name: "\\377" }', ["not valid UTF-8"]),
        ('item { name: "a" }', ["lacks an id or a name"]),
        ('item { id: 1 display_name: "a" }', ["lacks an id or a name"]),
    ],
)
def test_malformed_pbtxt_is_refused(text, words):
    with pytest.raises(LabelMapError) as error:
        LabelMap.from_pbtxt(text, "my.pbtxt")
    message = str(error.value)
    assert message.startswith("my.pbtxt")
    for word in words:
        assert word in message, message


def test_label_map_error_is_a_value_error():
    assert issubclass(LabelMapError, ValueError)


def test_json_form_is_a_list_of_id_name_objects():
    assert json.loads(LabelMap(("cat", "dog")).to_json()) == [
        {"id": 1, "name": "cat"},
        {"id": 2, "name": "dog"},
    ]
