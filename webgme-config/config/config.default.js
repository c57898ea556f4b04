/*eslint-env node*/
/**
 * The WebGME server of deepforge-adapters: the full webgme (UI) on webgme-engine, with the executor, a
 * filesystem blob, server-side plugins (the Python plugins run through webgme-bindings) and the pipeline seed.
 *
 * Everything a stack needs to differ on comes from the environment (the test fixtures start several stacks
 * side by side on free ports):
 *   DEEPFORGE_WEBGME_PORT          port (default 8888)
 *   DEEPFORGE_WEBGME_BIND          interface to listen on (default 127.0.0.1: loopback only)
 *   DEEPFORGE_MONGO_URI            the database (default mongodb://127.0.0.1:27017/deepforge)
 *   DEEPFORGE_WEBGME_DATA_DIR      blob store and executor label file (default ./data)
 *   DEEPFORGE_EXECUTOR_NONCE       if set, every executor request needs header x-executor-nonce
 *   DEEPFORGE_WORKER_REFRESH_MS    executor workerRefreshInterval (default 5000; tests use less)
 *   DEEPFORGE_OVERLAY_SHARD_SIZE   core.overlayShardSize, pointer entries before a node's overlay is split into
 *                                  shards (default WebGME's 10000; tests use less to get sharded nodes cheaply)
 *   DEEPFORGE_EXECUTOR_AUTH        "1": executor requires a user (x-api-token or a JWT); guests refused
 *   DEEPFORGE_WEBGME_AUTH          "1": webgme authentication on (users, tokens), guests still allowed
 *   DEEPFORGE_WEBGME_GUESTS        with DEEPFORGE_WEBGME_AUTH: "0" refuses guests everywhere (blob included)
 *   DEEPFORGE_PLUGIN_PATHS         extra plugin dirs, separated by ":"
 *   DEEPFORGE_PLUGINS_DIR          the DeepForge plugins (default: the repo's plugins/); a dir written by
 *                                  `python -m deepforge_plugins.metadata --deploy DIR`, whose dialogs follow
 *                                  the operator policy in force ($DEEPFORGE_POLICY, docs/security.md)
 *   DEEPFORGE_SCISERVER_LOGIN_URL  the SciServer login portal the account-link router logs in to (default
 *                                  SciServer's); routers/SciServerAuth, docs/sciserver.md "Linking an account"
 *   DEEPFORGE_SCISERVER_LINK_KEY   the key that router's token route demands; made at random when unset (set in
 *                                  this process's environment, so the plugins it starts inherit it)
 * WebGME's own WEBGME_<a>_<b>=v overrides (config.a.b = v) are applied after this file (config/index.js).
 */
'use strict';

var path = require('path'),
    fs = require('fs'),
    crypto = require('crypto'),
    config = require('webgme/config/config.default'),
    env = process.env,
    repoRoot = path.join(__dirname, '..', '..'),
    dataDir = path.resolve(env.DEEPFORGE_WEBGME_DATA_DIR || path.join(__dirname, '..', 'data')),
    port = parseInt(env.DEEPFORGE_WEBGME_PORT || '8888', 10);

function isOn(value) {
    return ['1', 'true', 'yes', 'on'].indexOf(String(value || '').toLowerCase()) !== -1;
}

config.server.port = port;
// standalone.js listens on server.handle || server.port: binding the handle keeps the server off the LAN.
config.server.handle = {port: port, host: env.DEEPFORGE_WEBGME_BIND || '127.0.0.1'};
config.server.log.transports = config.server.log.transports.filter(function (t) {
    return t.transportType === 'Console';
});
config.server.log.transports.forEach(function (t) {
    t.options.colorize = false;
});

config.mongo.uri = env.DEEPFORGE_MONGO_URI || 'mongodb://127.0.0.1:27017/deepforge';
if (env.DEEPFORGE_OVERLAY_SHARD_SIZE) {
    config.core.overlayShardSize = parseInt(env.DEEPFORGE_OVERLAY_SHARD_SIZE, 10);
}

config.blob.type = 'FS';
config.blob.fsDir = path.join(dataDir, 'blob-local-storage');

config.executor.enable = true;
config.executor.nonce = env.DEEPFORGE_EXECUTOR_NONCE || null;
config.executor.workerRefreshInterval = parseInt(env.DEEPFORGE_WORKER_REFRESH_MS || '5000', 10);
config.executor.labelJobs = path.join(dataDir, 'labelJobs.json');
if (isOn(env.DEEPFORGE_EXECUTOR_AUTH)) {
    config.executor.authentication.enable = true;
    config.executor.authentication.allowGuests = false;
}
if (isOn(env.DEEPFORGE_WEBGME_AUTH)) {
    config.authentication.enable = true;
    config.authentication.allowGuests = env.DEEPFORGE_WEBGME_GUESTS === undefined ||
        isOn(env.DEEPFORGE_WEBGME_GUESTS);
}

config.plugin.allowServerExecution = true;
// A plugin's notifications (ExecutePipeline's `stdout_update/<job>`, several a second while a job prints) are
// not toasts: the ExecutionView shows the output itself (docs/ui.md).  Results still pop up.
config.plugin.suppressRegularNotifications = true;
config.plugin.basePaths = config.plugin.basePaths.concat(
    [path.join(__dirname, '..', 'src', 'plugins'),
        path.resolve(env.DEEPFORGE_PLUGINS_DIR || path.join(repoRoot, 'plugins'))]
        .concat((env.DEEPFORGE_PLUGIN_PATHS || '').split(':').filter(Boolean))
        .filter(function (dir) {
            return fs.existsSync(dir);
        })
);

// One-time SciServer account link (DeepForge's /routers/SciServerAuth): tokens kept server-side per user.
if (!env.DEEPFORGE_SCISERVER_LINK_KEY) {
    env.DEEPFORGE_SCISERVER_LINK_KEY = crypto.randomBytes(32).toString('hex');
}
config.rest.components.SciServerAuth = {
    src: path.join(__dirname, '..', 'routers', 'SciServerAuth', 'SciServerAuth.js'),
    mount: 'routers/SciServerAuth',
    options: {
        loginUrl: env.DEEPFORGE_SCISERVER_LOGIN_URL || 'https://apps.sciserver.org/login-portal/keystone/v3/tokens',
        storeFile: path.join(dataDir, 'sciserver-links.json'),
    },
};

// The target dialog (issue 11 item 2): the `configWidget` of the target plugins (deepforge_plugins/metadata.py
// CONFIG_WIDGET = "panel/TargetConfig/TargetConfig"), served from src/widgets through webgme's /panel route, and
// the guard that strips secret fields from user and project settings (routers/SettingsGuard, docs/security.md).
config.visualization.panelPaths = config.visualization.panelPaths.concat([path.join(__dirname, '..', 'src', 'widgets')]);
config.rest.components.SettingsGuard = {
    src: path.join(__dirname, '..', 'routers', 'SettingsGuard', 'SettingsGuard.js'),
    mount: 'api',
    options: {},
};
// Our visualizers (src/visualizers, docs/ui.md): PipelineEditor for Pipeline nodes and ExecutionView for
// Execution nodes, under the ids DeepForge's library names first in their validVisualizers registry, so its
// own projects open in them too.  Panels and the widget they share are served from /panel/<dir>/...
config.visualization.panelPaths = config.visualization.panelPaths.concat([
    path.join(__dirname, '..', 'src', 'visualizers', 'panels'),
    path.join(__dirname, '..', 'src', 'visualizers', 'widgets')
]);
config.visualization.visualizerDescriptors = config.visualization.visualizerDescriptors.concat(
    [path.join(__dirname, '..', 'src', 'visualizers', 'Visualizers.json')]);

config.seedProjects.enable = true;
config.seedProjects.basePaths = [path.join(__dirname, '..', 'seeds')].concat(config.seedProjects.basePaths);
config.seedProjects.defaultProject = fs.existsSync(path.join(__dirname, '..', 'seeds', 'pipeline.webgmex')) ?
    'pipeline' : 'EmptyProject';

module.exports = config;
