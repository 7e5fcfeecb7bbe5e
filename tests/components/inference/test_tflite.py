"""Which presets get a TFLite export (the conversion itself: tests/components/export_model)."""

from cvat_kfp.components.inference.tflite import MOBILE_PRESETS, tflite_supported
from cvat_kfp.components.training.presets import PRESETS


def test_only_the_mobile_presets_get_tflite():
    assert set(MOBILE_PRESETS) == {name for name, preset in PRESETS.items() if "mobilenet" in name}
    for name in PRESETS:
        supported, why = tflite_supported(name, None)
        assert supported == (name in MOBILE_PRESETS)
        assert supported or "mobile presets" in why
