"""errands-react.js: its hooks rendered by React in Node, and the React example page in
Chromium against the real sync service and worker."""
