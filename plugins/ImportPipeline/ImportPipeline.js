/* globals define */
/* eslint-env node */
/** ImportPipeline: a Python plugin (deepforge_plugins.import_pipeline) started through webgme-bindings. */
define(['text!./metadata.json', 'plugin/PluginBase', 'module', 'path'], function (metadata, PluginBase, module, path) {
    'use strict';
    // Node's own require: requirejs would evaluate the CommonJS wrapper as an AMD module.
    const nodeRequire = require.nodeRequire || (global.requirejs || global.requireJS).nodeRequire;
    // The real file: a deployed plugin dir (metadata for its policy) links here (deepforge_plugins.metadata).
    const here = path.dirname(nodeRequire('fs').realpathSync(path.resolve(module.uri)));
    const wrapper = nodeRequire(path.join(here, '..', '..', 'packages', 'deepforge_plugins', 'wrapper.js'));
    const CoreZMQ = require('webgme-bindings').CoreZMQ;
    return wrapper.pythonPlugin(PluginBase, CoreZMQ, JSON.parse(metadata), path.join(here, 'run_plugin.py'));
});
