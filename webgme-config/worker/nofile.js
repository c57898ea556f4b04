// Preload for webgme-executor-worker 3.1.1 on Node >= 20 (node -r ./worker/nofile.js node_worker.js ...):
// it detects "browser" by a global File, which Node 20 defines, and then crashes archiving results.
delete globalThis.File;
