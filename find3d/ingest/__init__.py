"""Robot data in: ``find3d ingest-bag`` turns a rosbag2 recording into a nerfstudio scene.

The scene has exactly the layout ``find3d make-scene`` writes (``transforms.json`` with OpenGL
camera-to-world poses and OPENCV intrinsics, ``images/``, ``depths/`` in uint16 millimetres), so
``embed-frames``, ``ns-train find-field``, ``export-field`` and ``query`` take it unchanged.

One module per concern: ``bag`` (reading, topic discovery), ``images`` (pixel decoding, sharpness),
``camera`` (CameraInfo intrinsics), ``track`` (a pose time series with interpolation), ``tf`` (the
transform tree), ``sources`` (camera poses from tf or a pose topic), ``keyframes`` (motion and
sharpness selection), ``scene`` (the all-or-nothing output folder), ``ingest_bag`` (the command) and
``messages`` (the other direction: scene data as ROS messages, and a bag writer, to record a scene).
Besides the pure-Python ``rosbags``, only numpy, scipy, PIL, cv2 and tqdm are used: no ROS install.
"""
