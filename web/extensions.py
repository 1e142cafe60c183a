"""Flask extensions, created once and bound to the app in create_app (Flask's extension pattern)."""
from flask_socketio import SocketIO

socketio = SocketIO()
