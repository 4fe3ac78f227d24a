from glob import glob

from setuptools import setup

package_name = "ptq4ris_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=[package_name],
    package_data={package_name: ["fastdds_large_messages.xml", "fastdds_node_outputs.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/config", glob("config/*.yaml") + glob(f"{package_name}/fastdds_*.xml")),
        # launch/ links to the repository's top-level launch/ folder: one copy of each launch file
        (f"share/{package_name}/launch", glob("launch/*.launch.xml")),
        (f"share/{package_name}", ["rosdep.yaml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    description="ROS 2 node for referring image segmentation with a PTQ4RIS engine",
    license="Apache-2.0",
    entry_points={"console_scripts": ["ptq4ris_node = ptq4ris_ros.node:main",
                                    "ptq4ris_bag_player = ptq4ris_ros.bag_player:main"]},
)
