"""find3d's ROS 2 nodes: parameters, QoS and message conversion around the ``find3d`` Python API.

``query_node`` serves 3D queries on an exported field; ``find3d_interfaces/`` is the ament_cmake
package of their messages and services (built by ``python -m ros_nodes.build_interfaces``).
"""
