"""Case search as a Ray Serve application: hits equal the in-process scores (two-tower,
rerank, image queries), the page, thumbnails and explanations, every bad input a 4xx with one
message, a bounded load test on loopback, and a real headless Chromium session."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from core.data.rocov2 import image_bytes_column, read_split
from core.retrieval import fused_scores
from core.search import LIMITS
from tests.helpers import encode, free_port

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
RERANK_K, ALPHA = 16, 0.5


@pytest.fixture(scope="module")
def service(checkpoints, synthetic_dir, tmp_path_factory):
    from ray import serve

    from ray_jobs.runtime import init_ray
    from ray_jobs.serve import ServeConfig, start

    init_ray(num_cpus=2, progress_bars=False)
    cfg = ServeConfig(two_tower=checkpoints["two_tower"], fusion=checkpoints["fusion"],
                      data=str(synthetic_dir), port=free_port(), rerank_k=RERANK_K, alpha=ALPHA,
                      cache=str(tmp_path_factory.mktemp("serve-cache")), cpus_per_replica=0.5)
    try:
        yield start(cfg)
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def reference(checkpoints, synthetic_dir):
    """Both models' full score matrices on the test split, in one process."""
    from core.batch import collate
    from core.checkpoint import load_checkpoint
    from core.data.preprocess import build_preprocessor
    from core.evaluation.reference import encode_batches, score_matrix

    table = read_split(synthetic_dir, "test")
    out = {"image_id": [str(i) for i in table.column("image_id").to_pylist()],
           "caption": table.column("caption").to_pylist(), "image": image_bytes_column(table)}
    for kind in ("two_tower", "fusion"):
        loaded = load_checkpoint(checkpoints[kind])
        enc = encode_batches(loaded.model, [collate(build_preprocessor(
            loaded.config.model, loaded.tokenizer)(table))])
        assert enc["image_id"] == out["image_id"]
        out[kind] = score_matrix(loaded.model, enc["text"], enc["image"])  # (captions, images)
    return out


def expected(first: np.ndarray, rerank: np.ndarray | None, k: int) -> list[int]:
    """The reference order: by cosine, or the top RERANK_K by the fused rule."""
    order = np.argsort(-first, kind="stable")
    if rerank is None:
        return order[:k].tolist()
    cand = order[:max(k, RERANK_K)]
    fused = fused_scores(rerank[cand], first[cand], ALPHA)
    return cand[np.argsort(-fused, kind="stable")][:k].tolist()


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [h["image_id"] for h in response.json()["hits"]]


@pytest.mark.timeout(420)
def test_text_and_image_queries_equal_the_in_process_scores(service, reference):
    ref_ids = reference["image_id"]
    for q in (0, 7, 21):
        caption = reference["caption"][q]
        for rerank in (False, True):
            got = ids(requests.post(f"{service}/api/search/text",
                                    json={"query": caption, "k": 5, "rerank": rerank}))
            want = expected(reference["two_tower"][q], reference["fusion"][q] if rerank
                            else None, 5)
            assert got == [ref_ids[i] for i in want], (q, rerank)
        # image -> cases: the image's row of each matrix is a column (captions x images)
        for rerank in (False, True):
            got = ids(requests.post(f"{service}/api/search/image?k=5&rerank={str(rerank).lower()}",
                                    data=reference["image"][q]))
            want = expected(reference["two_tower"][:, q], reference["fusion"][:, q] if rerank
                            else None, 5)
            assert got == [ref_ids[i] for i in want], (q, rerank)
    body = requests.post(f"{service}/api/search/text",
                         json={"query": reference["caption"][3], "k": 3, "rerank": True}).json()
    assert body["reranked"] and body["rerank_k"] == RERANK_K and body["alpha"] == ALPHA
    hit = body["hits"][0]
    assert set(hit) == {"rank", "image_id", "score", "first_stage_score", "caption", "concepts",
                        "thumbnail"}
    assert requests.get(service + hit["thumbnail"]).headers["content-type"] == "image/jpeg"
    assert hit["caption"] == reference["caption"][ref_ids.index(hit["image_id"])]


@pytest.mark.timeout(300)
def test_page_info_thumbnail_and_explanation(service, reference):
    page = requests.get(service)
    assert page.status_code == 200 and 'id="query"' in page.text and 'id="upload"' in page.text
    info = requests.get(f"{service}/api/info").json()
    assert info["gallery_size"] == len(reference["image_id"]) and info["rerank_available"]
    assert info["limits"]["max_upload_bytes"] == LIMITS.max_upload_bytes
    assert "/api/search/text" in requests.get(f"{service}/openapi.json").json()["paths"]
    case = reference["image_id"][2]
    thumb = requests.get(f"{service}/api/cases/{case}/thumbnail")
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 192
    explained = requests.get(f"{service}/api/cases/{case}/explain",
                             params={"caption": reference["caption"][2]})
    assert explained.status_code == 200 and explained.headers["x-model"] == "fusion"
    assert Image.open(io.BytesIO(explained.content)).format == "PNG"
    # the score explained is the fusion match logit of that pair
    assert float(explained.headers["x-score"]) == pytest.approx(reference["fusion"][2, 2], abs=1e-3)


def bomb() -> bytes:
    """A 7000 x 7000 PNG (49 M pixels, above the limit) that compresses to ~50 kB."""
    return encode(Image.new("L", (7000, 7000)))


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG file that declares ``width`` x ``height`` (an empty image data chunk):
    Pillow reads the size from its header; nothing this big is ever decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [10000, 20000])  # over Pillow's warning / over its error
def test_an_upload_over_pillows_own_bomb_limit_is_a_413(side):
    from core.search.limits import SearchError, check_image

    with pytest.raises(SearchError) as found:
        check_image(png_header(side, side))
    assert found.value.status == 413, found.value.message


def png(side: int = 32) -> bytes:
    return encode(Image.new("RGB", (side, side), (90, 90, 90)))


TEXT, IMAGE = "/api/search/text", "/api/search/image"
BAD = [
    ("post", TEXT, {"json": {"query": "   ", "k": 5}}, 422, "query is empty"),
    ("post", TEXT, {"json": {"query": "x" * 1001}}, 422, "the limit is 1000"),
    ("post", TEXT, {"json": {"query": "chest", "k": 0}}, 422, "k must be between 1"),
    ("post", TEXT, {"json": {"query": "chest", "k": 65}}, 422, "the gallery holds 64 cases"),
    ("post", TEXT, {"json": {"query": "chest", "k": "many"}}, 422, "k: "),
    ("post", TEXT, {"json": {"k": 5}}, 422, "query: Field required"),
    ("post", TEXT, {"data": "{not json", "headers": {"content-type": "application/json"}}, 422,
     "JSON"),
    ("post", IMAGE, {"data": b""}, 422, "the upload is empty"),
    ("post", IMAGE, {"data": b"%PDF-1.4 not an image at all"}, 415, "not an image"),
    ("post", IMAGE, {"data": png(64)[:60]}, 422, "cannot be decoded"),
    ("post", IMAGE, {"data": bomb}, 413, "the limit is 40000000 pixels"),
    # over Pillow's own bomb limit (~89.5 M pixels): still a size problem, 413 (was 415)
    ("post", IMAGE, {"data": lambda: png_header(10000, 10000)}, 413, "the limit is 40000000 pixels"),
    # a chunked 20 MB JSON body: refused while it is read, not buffered and then measured
    ("post", TEXT, {"data": lambda: (b"x" * 65536 for _ in range(320)),
                    "headers": {"content-type": "application/json"}}, 413,
     "the limit is 16384 bytes"),
    ("post", IMAGE, {"data": b"\0" * (LIMITS.max_upload_bytes + 1)}, 413, "the limit is 8388608"),
    ("post", IMAGE + "?k=1000", {"data": png()}, 422, "k must be between 1"),
    ("get", "/api/cases/no-such-case/thumbnail", {}, 404, "no case with image_id 'no-such-case'"),
    ("get", "/api/cases/..%2F..%2Fetc%2Fpasswd/thumbnail", {}, 404, "Not Found"),
    ("get", "/api/cases/no-such-case/explain", {}, 404, "no case with image_id"),
    ("get", "/api/nothing-here", {}, 404, "Not Found"),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("method,path,kwargs,status,message", BAD,
                         ids=[f"{b[3]}-{b[4][:24]}" for b in BAD])
def test_bad_input_is_a_4xx_with_one_clear_message(service, method, path, kwargs, status,
                                                   message):
    if callable(kwargs.get("data")):  # built when its test runs, not at collection
        kwargs = {**kwargs, "data": kwargs["data"]()}
    response = getattr(requests, method)(service + path, timeout=60, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"] and "\n" not in body["error"], body
    assert message in body["error"], body


@pytest.mark.timeout(300)
def test_bounded_load_on_loopback_has_no_errors(service, reference):
    import subprocess
    import sys

    ARTIFACTS.mkdir(exist_ok=True)
    queries = ARTIFACTS / "serve_load_queries.txt"
    queries.write_text("\n".join(reference["caption"][:16]))

    def load(clients: int) -> dict:  # the benchmark's own load generator, as a program
        done = subprocess.run([sys.executable, "-m", "bench.serve_latency", "--load", service,
                               "--clients", str(clients), "--seconds", "10",
                               "--load-queries", str(queries)], cwd=REPO, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    rows = [load(clients) for clients in (8, 32)]
    (ARTIFACTS / "serve_load.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        assert row["errors"] == [], row["errors"][:3]
        assert row["requests"] >= row["clients"], row  # every client was answered


def chromium():
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        if os.environ.get("ROCORAY_REQUIRE_BROWSER"):  # CI installs them: never a silent skip
            pytest.fail("ROCORAY_REQUIRE_BROWSER is set but chromium/chromedriver are missing")
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium "
                    "chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1400"):
        options.add_argument(arg)
    options.binary_location = browser
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_search_page_in_a_real_browser(service, reference):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = chromium()
    wait = WebDriverWait(browser, 60)
    loaded = "return Array.from(document.querySelectorAll(arguments[0])).filter(" \
             "i => i.complete && i.naturalWidth > 0).length"
    try:
        browser.get(service)
        wait.until(lambda b: "cases" in b.find_element(By.ID, "info").text)
        browser.find_element(By.ID, "explain").click()
        browser.find_element(By.ID, "query").send_keys(reference["caption"][5])
        browser.find_element(By.ID, "search").click()
        wait.until(lambda b: b.execute_script(loaded, "img.thumb") == 8)
        status = browser.find_element(By.ID, "status").text
        assert "8 hits" in status, status
        shown = [img.get_attribute("alt") for img in browser.find_elements(By.CSS_SELECTOR,
                                                                           "img.thumb")]
        want = expected(reference["two_tower"][5], None, 8)
        assert shown == [reference["image_id"][i] for i in want]
        browser.find_elements(By.CSS_SELECTOR, "button.explain-button")[0].click()
        wait.until(lambda b: b.execute_script(loaded, "img.explain") == 1)
        # a bad query shows the service's message, not a broken page; then search again
        browser.find_element(By.ID, "query").clear()
        browser.find_element(By.ID, "search").click()
        wait.until(lambda b: "query is empty" in b.find_element(By.ID, "status").text)
        browser.find_element(By.ID, "query").send_keys(reference["caption"][5])
        browser.find_element(By.ID, "search").click()
        wait.until(lambda b: b.execute_script(loaded, "img.thumb") == 8
                   and "8 hits" in b.find_element(By.ID, "status").text)
        browser.find_elements(By.CSS_SELECTOR, "button.explain-button")[0].click()
        wait.until(lambda b: b.execute_script(loaded, "img.explain") == 1)
        ARTIFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "case_search.png"))
    finally:
        browser.quit()


def test_serve_run_builder_takes_the_same_options(tmp_path):
    """``serve run ray_jobs.serve:app_builder key=value ...`` goes through the same parser
    and checks as ``rocoray serve`` (before Ray or Serve is touched)."""
    from ray_jobs.options import USER_ERRORS
    from ray_jobs.serve import app_builder

    with pytest.raises(USER_ERRORS, match="checkpoint path does not exist"):
        app_builder({"two_tower": str(tmp_path / "nope")})
    with pytest.raises(USER_ERRORS, match="--port must be in 1..65535"):
        app_builder({"two_tower": str(tmp_path / "nope"), "port": 0})
    with pytest.raises(SystemExit):  # argparse names the unknown option
        app_builder({"two_tower": "x", "colour": "blue"})


def test_a_replica_refuses_galleries_of_different_rows(checkpoints, synthetic_dir, tmp_path):
    """Rerank indexes the fusion features by the two-tower candidates' rows: galleries whose
    rows differ (another order, a row skipped by one only) must not be served together."""
    from core.checkpoint import load_checkpoint
    from core.evaluation.reference import encode_batches
    from core.feature_store import FeatureStore
    from core.models import MODELS
    from core.scoring import outputs
    from ray_jobs.serve import load_index

    from core.batch import collate
    from core.data.preprocess import build_preprocessor

    table = read_split(synthetic_dir, "test").slice(0, 8)
    from core.scoring.settings import ScoringSettings

    spec = {"data": str(synthetic_dir), "split": "test", "scoring": ScoringSettings(rerank_k=4),
            "checkpoints": checkpoints, "features": {}}
    for kind, order in (("two_tower", range(8)), ("fusion", [1, 0, *range(2, 8)])):
        loaded = load_checkpoint(checkpoints[kind])
        enc = encode_batches(loaded.model, [collate(build_preprocessor(
            loaded.config.model, loaded.tokenizer)(table.take(list(order))))])
        root = tmp_path / kind
        store = FeatureStore(str(root), MODELS[kind].feature_types)
        for side in ("text", "image"):
            store.write_block(side, 0, enc[side])
        outputs.write_gallery(str(root), enc["image_id"], enc["caption"], enc["group"])
        spec["features"][kind] = {"root": str(root), "blocks": 1}
    with pytest.raises(ValueError, match="different rows"):
        load_index(spec)
    spec["features"].pop("fusion")  # the two-tower gallery alone is served
    assert len(load_index(spec)) == 8
