"""The package as a robot team builds and starts it (issue 22): ``colcon build`` of ros2_ws, the installed
node run from ``install/`` with the installed params file, and the launch files checked against what the
build really installed. ``ros2 launch`` itself is not on PyPI, so the launch files are read as the XML
front end reads them: every executable, parameter, included file and argument they name must exist."""
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from ptq4ris_ros.params import NodeParams, validate

PACKAGE = Path(__file__).resolve().parents[1]
WORKSPACE = PACKAGE.parents[1]
REPO = WORKSPACE.parent
COLCON = Path(sys.executable).parent / "colcon"
NODE_TOPICS = {"image", "image/compressed", "command"}


@pytest.fixture(scope="module")
def install(tmp_path_factory):
    assert COLCON.exists(), "colcon is missing: 'make .venv/.installed' installs it (the test extra)"
    base = tmp_path_factory.mktemp("colcon")
    r = subprocess.run([str(COLCON), "--log-base", str(base / "log"), "build", "--base-paths", str(WORKSPACE / "src"),
                        "--build-base", str(base / "build"), "--install-base", str(base / "install")],
                       cwd=base, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return base / "install" / "ptq4ris_ros"


def installed_env(install: Path, domain: int) -> dict:
    """What sourcing install/setup.sh gives: the installed package first on the paths."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("_ROS_WHEELS")}
    site = next((install / "lib").glob("python3*/site-packages"))
    env["PYTHONPATH"] = os.pathsep.join([str(site)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(install)] + (
        [env["AMENT_PREFIX_PATH"]] if env.get("AMENT_PREFIX_PATH") else []))
    env.update(ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    return env


def test_the_build_installs_executables_params_launch_files_and_rosdep_keys(install):
    share = install / "share" / "ptq4ris_ros"
    for exe in ("ptq4ris_node", "ptq4ris_bag_player"):
        assert os.access(install / "lib" / "ptq4ris_ros" / exe, os.X_OK), exe
    assert all((share / "config" / name).is_file()
               for name in ("params.yaml", "fastdds_large_messages.xml", "fastdds_node_outputs.xml"))
    assert sorted(p.name for p in (share / "launch").iterdir()) == sorted(p.name for p in (REPO / "launch").iterdir())
    assert (install.parent / "setup.sh").exists()
    # package.xml: every non-ROS run dependency resolves through rosdistro's standard keys or our rosdep.yaml
    deps = [e.text for e in ET.parse(share / "package.xml").getroot().iter("exec_depend")]
    ours = yaml.safe_load((share / "rosdep.yaml").read_text(encoding="utf-8"))
    python_deps = [d for d in deps if d.startswith("python3-")]
    standard = ("python3-numpy", "python3-pil", "python3-yaml", "python3-pytest")  # rosdistro's own keys
    assert {"python3-numpy", "python3-pil"} <= set(python_deps)
    assert all(d in ours or d in standard for d in python_deps), python_deps
    assert {"python3-onnxruntime-pip", "python3-tokenizers-pip"} <= set(ours)


def test_the_installed_node_runs_from_install_with_the_installed_params(install, tmp_path):
    from ptq4ris_core.engine import export_engine  # an engine to serve: the default model's FP32 export
    from ptq4ris_core.models import load_model
    engine = export_engine(load_model("default"), tmp_path / "engine")
    env = installed_env(install, 150 + os.getpid() % 50)
    where = subprocess.run([sys.executable, "-c", "import ptq4ris_ros; print(ptq4ris_ros.__file__)"], env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(install)), where  # the built package, not the source tree
    params = install / "share" / "ptq4ris_ros" / "config" / "params.yaml"
    log = tmp_path / "node.log"
    proc = subprocess.Popen([str(install / "lib" / "ptq4ris_ros" / "ptq4ris_node"), "--ros-args",
                             "--params-file", str(params), "-p", f"engine_path:={engine}"],
                            env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and "active:" not in log.read_text(encoding="utf-8"):
            assert proc.poll() is None, log.read_text(encoding="utf-8")
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(20)
    text = log.read_text(encoding="utf-8")
    assert "engine loaded" in text and "active:" in text, text
    assert rc == 0 and "Traceback" not in text and "context is invalid" not in text, text


# --- The launch files, read as the XML launch front end reads them. -------------------------------------
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.xml"))
VAR = re.compile(r"\$\(var (\w+)\)")
FIND = re.compile(r"\$\(find-pkg-share (\w+)\)(/[\w/.-]+)")


def declared_args(root) -> dict:
    """The launch file's own arguments (top-level <arg>), each with its default (None: required)."""
    return {a.get("name"): a.get("default") for a in root.findall("arg")}


def test_there_is_one_launch_file_per_purpose():
    assert [p.name for p in LAUNCH_FILES] == ["ptq4ris.launch.xml", "ptq4ris_bag_replay.launch.xml",
                                              "ptq4ris_camera.launch.xml"]


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_a_launch_file_names_only_what_the_built_package_has(path, install):
    root = ET.parse(path).getroot()
    assert root.tag == "launch"
    args = declared_args(root)
    text = path.read_text(encoding="utf-8")
    for used in VAR.findall(text):
        assert used in args, f"{path.name} uses $(var {used}) without declaring it"
    for pkg, rel in FIND.findall(text):
        if pkg == "ptq4ris_ros":
            assert (install / "share" / "ptq4ris_ros" / rel.lstrip("/")).exists(), f"{path.name}: {rel} not installed"
    for node in root.iter("node"):
        if node.get("pkg") != "ptq4ris_ros":
            continue  # a camera driver: its own package's business
        assert (install / "lib" / "ptq4ris_ros" / node.get("exec")).exists(), node.get("exec")
        for p in node.findall("param"):
            assert p.get("from") or p.get("name") in NodeParams.__dataclass_fields__, p.get("name")
        for r in node.findall("remap"):
            assert r.get("from") in NODE_TOPICS, r.get("from")
    for inc in root.iter("include"):
        pkg, rel = FIND.search(inc.get("file")).groups()
        included = ET.parse(install / "share" / pkg / rel.lstrip("/")).getroot()
        given, takes = {a.get("name") for a in inc.findall("arg")}, declared_args(included)
        assert given <= set(takes), f"{path.name} passes {given - set(takes)} that {rel} does not declare"
        missing = {n for n, d in takes.items() if d is None} - given
        assert not missing, f"{path.name} leaves {missing} of {rel} unset"


def test_the_installed_params_file_passes_the_nodes_checks(install):
    data = yaml.safe_load((install / "share" / "ptq4ris_ros" / "config" / "params.yaml").read_text(encoding="utf-8"))
    values = data["/**"]["ros__parameters"]
    assert set(values) == set(NodeParams.__dataclass_fields__)
    _, problems = validate({**values, "engine_path": "/opt/engines/default_w8a8"})
    assert problems == []
    _, problems = validate(values)  # as shipped, engine_path is empty: the launch files' engine argument sets it
    assert problems and "engine_path" in problems[0]


def test_the_bag_replay_launch_remaps_the_bag_topics_onto_the_nodes():
    from ptq4ris_core.bags.topics import COMMAND_TOPIC, IMAGE_TOPIC
    root = ET.parse(REPO / "launch" / "ptq4ris_bag_replay.launch.xml").getroot()
    args = declared_args(root)
    assert (args["bag_image_topic"], args["bag_command_topic"]) == (IMAGE_TOPIC, COMMAND_TOPIC)
    cmd = root.find("executable").get("cmd")
    inc = {a.get("name"): a.get("value") for a in root.find("include").findall("arg")}
    assert cmd.startswith("ros2 bag play $(var bag)")
    assert f"$(var bag_image_topic):={inc['image']}" in cmd and f"$(var bag_command_topic):={inc['command']}" in cmd


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_the_large_message_profile_goes_to_the_frame_senders_only(path):
    """A Fast DDS segment stays resident in the process that sends through it: the camera or the bag player
    gets the 8 MB profile, the node keeps its own 4 MB one (transport.py), so no launch file sets it for all."""
    root = ET.parse(path).getroot()
    assert not [e for e in root.iter("set_env") if e.get("name") == "FASTDDS_DEFAULT_PROFILES_FILE"]
    senders = [e for e in root.iter() if e.tag in ("node", "executable") and e.get("pkg") != "ptq4ris_ros"]
    for sender in senders:
        env = {e.get("name"): e.get("value") for e in sender.findall("env")}
        assert env.get("FASTDDS_DEFAULT_PROFILES_FILE", "").endswith("/config/fastdds_large_messages.xml"), sender.attrib
    for node in root.iter("node"):
        if node.get("pkg") == "ptq4ris_ros":
            assert not node.findall("env"), node.attrib


def test_a_launch_argument_naming_a_missing_engine_is_refused_by_the_node(install, tmp_path):
    env = installed_env(install, 150 + (os.getpid() + 7) % 50)
    log = tmp_path / "node.log"
    proc = subprocess.Popen([str(install / "lib" / "ptq4ris_ros" / "ptq4ris_node"), "--ros-args", "-p",
                             f"engine_path:={tmp_path / 'no_such_engine'}"], env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and "not configured" not in log.read_text(encoding="utf-8"):
            time.sleep(0.2)
        assert proc.poll() is None  # it stays up, waiting to be configured again
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    text = log.read_text(encoding="utf-8")
    assert "no_such_engine" in text and "set engine_path" in text, text


@pytest.mark.parametrize("content", [None, "a: [", "just text"])
def test_a_missing_or_broken_params_file_is_one_clear_error(install, tmp_path, content):
    path = tmp_path / "params.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    r = subprocess.run([str(install / "lib" / "ptq4ris_ros" / "ptq4ris_node"), "--ros-args", "--params-file", str(path)],
                       env=installed_env(install, 150 + (os.getpid() + 11) % 50), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "ptq4ris_node: error: params file" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
