/* globals define */
/* eslint-env node */
/** Test-only: sets attributes of the active node, as a user does in the model editor (see run_plugin.py). */
define(['text!./metadata.json', 'plugin/PluginBase', 'module', 'path'], function (metadata, PluginBase, module, path) {
    'use strict';
    const here = path.dirname(path.resolve(module.uri));
    const nodeRequire = require.nodeRequire || (global.requirejs || global.requireJS).nodeRequire;
    const root = path.join(here, '..', '..', '..', '..');
    const wrapper = nodeRequire(path.join(root, 'packages', 'deepforge_plugins', 'wrapper.js'));
    const CoreZMQ = require('webgme-bindings').CoreZMQ;
    return wrapper.pythonPlugin(PluginBase, CoreZMQ, JSON.parse(metadata), path.join(here, 'run_plugin.py'));
});
