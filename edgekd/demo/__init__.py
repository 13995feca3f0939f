"""Live demos. `eye_camera`: single-eye emotion recognition on an eye camera (`edgekd demo eye-camera`).

Modules: sources (camera, video file, synthetic eye stream), roi (whole frame or a Haar eye
detector), backends (the model in-process or on a target through the agent), overlay (what is
drawn on the frame), view (an OpenCV window or a local MJPEG web page), eye_camera (the loop and
its outputs). Only command bodies import them: they import OpenCV and numpy.
"""
