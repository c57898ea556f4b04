/* eslint-env node */
/**
 * The JavaScript half of every DeepForge Python plugin (plain CommonJS, shared by plugins/<Name>/<Name>.js).
 *
 * WebGME runs plugins in JavaScript; webgme-bindings' CoreZMQ exposes the Core, the Project and this plugin
 * over ZeroMQ, and the Python side (plugins/<Name>/run_plugin.py) drives them.  This wrapper:
 *  - starts CoreZMQ on the first free port from DEEPFORGE_PLUGIN_ZMQ_PORT (default 5555),
 *  - spawns the interpreter named by WEBGME_PYTHON (default python3: Debian has no `python`),
 *  - forwards the Python process's output to the plugin logger,
 *  - gives Python what the bindings lack, as methods Python calls through `self._send`:
 *      isAborted()       true after onAbort (the user pressed "abort" in the UI)
 *      getWebgmeToken()  the invoking user's token, for blob/executor REST calls under their identity
 *      getMessage(id)    the last content sent to the plugin with that message id (onMessage)
 *    (notifications use the bindings' own sendNotification).
 * The result's success is whatever Python set; a Python exit code > 0 is a crash and fails the plugin.
 */
'use strict';

const childProcess = require('child_process');

function pythonPlugin(PluginBase, CoreZMQ, pluginMetadata, scriptPath) {
    function PythonPlugin() {
        PluginBase.call(this);
        this.pluginMetadata = pluginMetadata;
        this._aborted = false;
        this._messages = {};
    }

    PythonPlugin.metadata = pluginMetadata;
    PythonPlugin.prototype = Object.create(PluginBase.prototype);
    PythonPlugin.prototype.constructor = PythonPlugin;

    PythonPlugin.prototype.onAbort = function () {
        this.logger.info('abort requested');
        this._aborted = true;
    };

    PythonPlugin.prototype.onMessage = function (messageId, content) {
        this._messages[messageId] = content;
    };

    PythonPlugin.prototype.isAborted = function () {
        return this._aborted;
    };

    PythonPlugin.prototype.getWebgmeToken = function () {
        return (this.blobClient && this.blobClient.webgmeToken) || null;
    };

    PythonPlugin.prototype.getMessage = function (messageId) {
        return Object.prototype.hasOwnProperty.call(this._messages, messageId) ? this._messages[messageId] : null;
    };

    PythonPlugin.prototype._runPython = function (port) {
        const program = process.env.WEBGME_PYTHON || 'python3';
        const args = [
            scriptPath,
            String(port),
            `"${this.commitHash}"`,
            `"${this.branchName || ''}"`,
            `"${this.core.getPath(this.activeNode)}"`,
            `"${(this.activeSelection || []).map(node => this.core.getPath(node)).join(',')}"`,
            `"${this.namespace || ''}"`,
        ];
        const logger = this.logger;
        return new Promise((resolve, reject) => {
            const child = childProcess.spawn(program, args, {env: process.env, stdio: ['ignore', 'pipe', 'pipe']});
            child.stdout.on('data', data => logger.info(data.toString().trimEnd()));
            child.stderr.on('data', data => logger.error(data.toString().trimEnd()));
            child.on('error', reject);
            child.on('close', (code, signal) => {
                if (code === 0) {
                    resolve();
                } else {
                    reject(new Error(`${program} ${scriptPath} exited with ${signal || 'code ' + code}`));
                }
            });
        });
    };

    PythonPlugin.prototype.main = function (callback) {
        const startPort = parseInt(process.env.DEEPFORGE_PLUGIN_ZMQ_PORT || '5555', 10);
        const corezmq = new CoreZMQ(this.project, this.core, this.logger, {port: startPort, plugin: this});
        this.result.setSuccess(null);
        corezmq.startServer()
            .then(port => {
                this.logger.debug(`CoreZMQ listening on ${port}`);
                return this._runPython(port);
            })
            .then(() => corezmq.stopServer())
            .then(() => {
                if (this.result.getSuccess() === null) {
                    this.result.setSuccess(true);
                }
                callback(null, this.result);
            })
            .catch(err => {
                this.logger.error(err.stack || String(err));
                this.result.setSuccess(false);
                if (!this.result.getError()) {
                    this.result.setError(err.message);
                }
                Promise.resolve(corezmq.stopServer()).catch(() => null).then(() => callback(err, this.result));
            });
    };

    return PythonPlugin;
}

module.exports = {pythonPlugin};
