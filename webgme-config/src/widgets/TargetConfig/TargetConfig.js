/*globals define, $, WebGMEGlobal*/
/*jshint browser: true*/
/**
 * The target dialog: the `configWidget` of ExecutePipeline, ExecuteJob, CancelExecution, SetExecutionTargets
 * and UploadArtifact (plugins/<id>/metadata.json, written by deepforge_plugins/metadata.py).
 *
 * WebGME's InterpreterManager loads it with requirejs in place of its PluginConfigDialog and calls
 * `new Dialog({client, logger}).show(globalOptions, metadata, storedConfig, callback)`; `callback(global,
 * pluginConfig, storeInUser)` (or `callback(false)` when canceled) runs the plugin.  This dialog is WebGME's
 * own (subclassed), with the same configStructure and the same config shape (`storage`, `storage.<id>.<f>`),
 * and:
 *   - shows only the chosen storage's and compute's fields (plus the secret fields of the other backends the
 *     node's operations use: their secrets are asked for too);
 *   - says where the node's own targets (SetExecutionTargets, registry `executionTargets`) come from and
 *     preselects them; for a run they are fixed (the run uses them whatever the dialog says), so the select is
 *     locked and their public fields are shown read-only;
 *   - secret fields (`isAuth`) are password inputs; "Save these settings" saves the config WITHOUT them (the
 *     server strips them too: webgme-config/routers/SettingsGuard) and the fields of backends not chosen are
 *     not sent to the plugin;
 *   - defaults true for this server: an empty `host` is this server (the page's own origin is shown), a
 *     field's default is its placeholder.
 */
define([
    'js/Dialogs/PluginConfig/PluginConfigDialog',
    'js/Utils/ComponentSettings',
    'css!./TargetConfig.css'
], function (PluginConfigDialog, ComponentSettings) {

    'use strict';

    var KINDS = ['storage', 'compute'],
        REGISTRY_KEY = 'executionTargets',
        LOAD_TIMEOUT_MS = 20000;

    function TargetConfig(params) {
        PluginConfigDialog.call(this, params);
        this._logger = params.logger;
        this._entries = {};     // config name -> configStructure entry
        this._targets = null;   // what the node(s) say, see _readTargets
        this._locked = {};      // kind -> true: the node's own choice, shown read-only
    }

    TargetConfig.prototype = Object.create(PluginConfigDialog.prototype);
    TargetConfig.prototype.constructor = TargetConfig;

    // ----------------------------------------------------------------------------------------- helpers
    function parseTargets(text) {
        if (!text) {
            return {};
        }
        try {
            var value = typeof text === 'string' ? JSON.parse(text) : text;
            return value && typeof value === 'object' ? value : {};
        } catch (e) {
            return {};
        }
    }

    /** `{kind, backend, field}` of a config name `storage.s3.bucketName` (null for other names). */
    function splitName(name) {
        var parts = String(name).split('.');
        if (parts.length < 3 || KINDS.indexOf(parts[0]) === -1) {
            return null;
        }
        return {kind: parts[0], backend: parts[1], field: parts.slice(2).join('.')};
    }

    function componentId(metadata) {
        return 'Plugin_' + metadata.id + '__' + String(metadata.version).split('.').join('_');
    }

    /** `s3 (bucketName: runs, endpoint: ...)`: the backend and the values that are not its defaults. */
    function describe(choice, kind, entries) {
        var config = choice.config || {},
            keys = Object.keys(config).filter(function (k) {
                var entry = entries[kind + '.' + choice.id + '.' + k];
                return !entry || entry.value !== config[k];
            });
        return choice.id + (keys.length ? ' (' + keys.map(function (k) {
            return k + ': ' + config[k];
        }).join(', ') + ')' : '');
    }

    // ------------------------------------------------------------------------------- reading the nodes
    /** Load `ids` (and `depth` levels of children) into the client, then call `done` (at the latest after
     * LOAD_TIMEOUT_MS: what is loaded by then is used). */
    TargetConfig.prototype._load = function (ids, depth, done) {
        var client = this._client,
            finished = false,
            patterns = {},
            uiId,
            timer;

        function finish() {
            if (!finished) {
                finished = true;
                clearTimeout(timer);
                client.removeUI(uiId);
                done();
            }
        }

        ids.filter(Boolean).forEach(function (id) {
            patterns[id] = {children: depth};
        });
        if (Object.keys(patterns).length === 0) {
            return done();
        }
        uiId = client.addUI(null, function (events) {
            if (events.some(function (e) { return e.etype === 'complete' || e.etype === 'incomplete'; })) {
                finish();
            }
        });
        timer = setTimeout(finish, LOAD_TIMEOUT_MS);
        client.updateTerritory(uiId, patterns);
    };

    /** The node is a `name` (a meta node of that name, in any namespace, is among its bases). */
    TargetConfig.prototype._isA = function (node, name) {
        return Boolean(node) && this._client.getAllMetaNodes().some(function (meta) {
            return meta.getAttribute('name') === name && node.isTypeOf(meta.getId());
        });
    };

    TargetConfig.prototype._children = function (node, name) {
        var self = this;
        return (node ? node.getChildrenIds() : []).map(function (id) {
            return self._client.getNode(id);
        }).filter(function (child) {
            return child && (!name || self._isA(child, name));
        });
    };

    function own(node) {
        return parseTargets(node.getOwnRegistry(REGISTRY_KEY));
    }

    function label(node) {
        return node.getAttribute('name') || node.getId();
    }

    /**
     * What the node(s) the plugin runs on say about targets:
     *   {nodes: [{name, type}], own: {kind: {id, config, from}}, others: {kind: {id: [names]}}, editing: bool}
     * `own` is what the run uses whatever the dialog says (an Operation/Execution/Pipeline choice), `others`
     * the backends individual operations use on their own (their secrets are asked for too).  For
     * SetExecutionTargets (`editing`) `own` is only preselected.
     */
    TargetConfig.prototype._readTargets = function (context) {
        var self = this,
            client = this._client,
            active = client.getNode(context.activeNode),
            selection = (context.activeSelection || []).map(function (id) {
                return client.getNode(id);
            }).filter(function (node) {
                return node && (self._isA(node, 'Operation') || self._isA(node, 'Pipeline'));
            }),
            editing = this._pluginMetadata.id === 'SetExecutionTargets',
            result = {nodes: [], own: {}, others: {}, editing: editing};

        function take(targets, from, onlyMissing) {
            KINDS.forEach(function (kind) {
                if (targets[kind] && targets[kind].id && !(onlyMissing && result.own[kind])) {
                    result.own[kind] = {id: targets[kind].id, config: targets[kind].config || {}, from: from};
                }
            });
        }

        function other(node, targets) {
            KINDS.forEach(function (kind) {
                var choice = targets[kind];
                if (choice && choice.id && (!result.own[kind] || result.own[kind].id !== choice.id)) {
                    result.others[kind] = result.others[kind] || {};
                    (result.others[kind][choice.id] = result.others[kind][choice.id] || []).push(label(node));
                }
            });
        }

        if (!active) {
            return result;
        }
        if (editing && selection.length) {
            result.nodes = selection.map(function (node) {
                return {name: label(node), type: self._isA(node, 'Pipeline') ? 'pipeline' : 'operation'};
            });
            // Preselect what the selected nodes agree on.
            KINDS.forEach(function (kind) {
                var choices = selection.map(function (node) {
                    return JSON.stringify(own(node)[kind] || null);
                });
                if (choices[0] !== 'null' && choices.every(function (c) { return c === choices[0]; })) {
                    result.own[kind] = JSON.parse(choices[0]);
                    result.own[kind].from = selection.length === 1 ? result.nodes[0].type + ' \u201c' +
                        result.nodes[0].name + '\u201d' : 'the selected operations';
                }
            });
        } else if (this._isA(active, 'Pipeline')) {
            result.nodes = [{name: label(active), type: 'pipeline'}];
            take(own(active), 'pipeline \u201c' + label(active) + '\u201d');
            if (!editing) {
                this._children(active, 'Operation').forEach(function (op) {
                    other(op, own(op));
                });
            }
        } else if (this._isA(active, 'Operation')) {
            result.nodes = [{name: label(active), type: 'operation'}];
            take(own(active), 'operation \u201c' + label(active) + '\u201d');
        } else if (this._isA(active, 'Execution')) {
            result.nodes = [{name: label(active), type: 'execution'}];
            take(own(active), 'execution \u201c' + label(active) + '\u201d (from its pipeline)');
            this._children(active, 'Job').forEach(function (job) {
                self._children(job, 'Operation').forEach(function (op) {
                    other(job, own(op));
                });
            });
        } else if (this._isA(active, 'Job')) {
            result.nodes = [{name: label(active), type: 'job'}];
            this._children(active, 'Operation').forEach(function (op) {
                take(own(op), 'job \u201c' + label(active) + '\u201d');
            });
            var execution = client.getNode(active.getParentId());
            if (execution) {
                take(own(execution), 'execution \u201c' + label(execution) + '\u201d (from its pipeline)', true);
            }
        }
        return result;
    };

    // ---------------------------------------------------------------------------------------- the dialog
    TargetConfig.prototype.show = function (globalOptions, pluginMetadata, prevConfig, callback) {
        var self = this,
            context = this._client.getCurrentPluginContext(pluginMetadata.id,
                pluginMetadata.__context && pluginMetadata.__context.activeNodeId,
                pluginMetadata.__context && pluginMetadata.__context.activeSelectionIds).managerConfig,
            active = context.activeNode,
            parent = this._client.getNode(active) ? this._client.getNode(active).getParentId() : null;

        this._pluginMetadata = pluginMetadata;
        (pluginMetadata.configStructure || []).forEach(function (entry) {
            self._entries[entry.name] = entry;
        });
        prevConfig = this._healStoredSettings(pluginMetadata, prevConfig || {});
        // Load the node, its children and grandchildren (a Pipeline's operations, an Execution's jobs and
        // their operations) and the parent (a Job's Execution), then read what they say.
        this._load([active].concat(parent ? [parent] : []).concat(context.activeSelection || []), 2, function () {
            var config = $.extend({}, prevConfig || {}),
                targets;
            try {
                targets = self._targets = self._readTargets(context);
            } catch (err) {
                self._logger.error('target dialog: cannot read the node\'s targets', err);
                targets = self._targets = {nodes: [], own: {}, others: {}, editing: false};
            }
            // The node's own targets, preselected (their public fields filled in).
            KINDS.forEach(function (kind) {
                var choice = targets.own[kind];
                if (choice && self._entries[kind] && (self._entries[kind].valueItems || []).indexOf(choice.id) !== -1) {
                    config[kind] = choice.id;
                    self._locked[kind] = !targets.editing;  // a run uses the node's choice: not to be changed
                    Object.keys(choice.config || {}).forEach(function (field) {
                        if (self._entries[kind + '.' + choice.id + '.' + field]) {
                            config[kind + '.' + choice.id + '.' + field] = choice.config[field];
                        }
                    });
                }
            });
            PluginConfigDialog.prototype.show.call(self, globalOptions, pluginMetadata, config,
                function (globalConfig, pluginConfig, storeInUser) {
                    if (globalConfig === false || !pluginConfig) {
                        return callback(false);
                    }
                    pluginConfig = self._forThePlugin(pluginConfig);
                    if (storeInUser === true) {
                        self._saveWithoutSecrets(pluginMetadata, pluginConfig);
                    }
                    // Never let WebGME save it: its copy would hold the secrets.
                    callback(globalConfig, pluginConfig, false);
                });
        });
    };

    TargetConfig.prototype._isSecret = function (name) {
        var entry = this._entries[name];
        return Boolean(entry && entry.isAuth);
    };

    /** The backends whose fields the plugin gets: the chosen ones, plus (secrets only) the others in use. */
    TargetConfig.prototype._visible = function (name, chosen) {
        var parts = splitName(name),
            others = (this._targets && this._targets.others) || {};
        if (!parts || !this._entries[parts.kind]) {
            return true;
        }
        if (chosen[parts.kind] === parts.backend) {
            return true;
        }
        return this._isSecret(name) && Boolean(others[parts.kind] && others[parts.kind][parts.backend]);
    };

    TargetConfig.prototype._forThePlugin = function (pluginConfig) {
        var self = this,
            chosen = {},
            result = {};
        KINDS.forEach(function (kind) {
            chosen[kind] = pluginConfig[kind];
        });
        Object.keys(pluginConfig).forEach(function (name) {
            if (self._visible(name, chosen)) {
                result[name] = pluginConfig[name];
            }
        });
        return result;
    };

    TargetConfig.prototype._saveWithoutSecrets = function (pluginMetadata, pluginConfig) {
        var self = this,
            kept = {};
        Object.keys(pluginConfig).forEach(function (name) {
            if (!self._isSecret(name)) {
                kept[name] = pluginConfig[name];
            }
        });
        ComponentSettings.overwriteComponentSettings(componentId(pluginMetadata), kept, function (err) {
            if (err) {
                self._logger.error('Failed storing settings for user', err);
            }
        });
    };

    /** Settings saved before this dialog (WebGME's own dialog saved everything, nested under `_dependencies`
     * because of the dots in the names) may hold secrets: save them again without, and do not offer them. */
    TargetConfig.prototype._healStoredSettings = function (pluginMetadata, prevConfig) {
        var self = this,
            id = componentId(pluginMetadata),
            stored = typeof WebGMEGlobal !== 'undefined' && WebGMEGlobal.userInfo && WebGMEGlobal.userInfo.settings &&
                WebGMEGlobal.userInfo.settings[id],
            secretNames = pluginMetadata.secretFields || [],
            dirty = false,
            clean = {};

        function isSecret(name) {
            return self._isSecret(name) || secretNames.indexOf(String(name).split('.').pop()) !== -1;
        }

        if (!stored || typeof stored !== 'object') {
            return prevConfig;
        }
        Object.keys(stored).forEach(function (name) {
            if (name === '_dependencies' || isSecret(name)) {
                dirty = true;
            } else {
                clean[name] = stored[name];
            }
        });
        if (!dirty) {
            return prevConfig;
        }
        this._logger.warn('target dialog: the saved settings of ' + pluginMetadata.id + ' held secrets; saved again ' +
            'without them');
        ComponentSettings.overwriteComponentSettings(id, clean, function (err) {
            if (err) {
                self._logger.error('Failed storing settings for user', err);
            }
        });
        prevConfig = $.extend({}, prevConfig);
        Object.keys(stored).forEach(function (name) {
            if (!Object.prototype.hasOwnProperty.call(clean, name) && prevConfig[name] === stored[name]) {
                delete prevConfig[name];
            }
        });
        delete prevConfig._dependencies;
        return prevConfig;
    };

    TargetConfig.prototype._generateControl = function (id, entry, prevConfig, widgetLocation, viewOnly) {
        var parts = splitName(entry.name),
            fixed = parts && this._locked[parts.kind] && this._targets.own[parts.kind],
            el;

        entry = $.extend({}, entry);
        if (fixed && fixed.id === parts.backend && !entry.isAuth) {
            entry.readOnly = true;  // the node's own choice: the run uses its value, not the dialog's
        }
        if (this._locked[entry.name]) {
            entry.readOnly = true;
        }
        el = PluginConfigDialog.prototype._generateControl.call(this, id, entry, prevConfig, widgetLocation,
            viewOnly);
        el.attr('data-config-name', entry.name);
        if (parts) {
            el.attr('data-kind', parts.kind).attr('data-backend', parts.backend).addClass('target-field');
        } else if (this._entries[entry.name] && KINDS.indexOf(entry.name) !== -1) {
            el.addClass('target-kind').attr('data-kind', entry.name);
        }
        if (entry.hint !== undefined && entry.hint !== '') {
            el.find('input[type="text"], input[type="password"]').attr('placeholder', String(entry.hint));
        }
        if (entry.serverUrl) {
            el.find('input').attr('placeholder', window.location.origin);
            el.find('.desc').text((entry.description || '').replace('(default: this server)',
                '(default: this server, ' + window.location.origin + ')'));
        }
        return el;
    };

    /** As WebGME's, but a field name keeps its dots: WebGME's dialog reads `storage.s3.endpoint` as the field
     * `endpoint` of a plugin dependency `storage` > `s3` (`_dependencies`), so the plugin never got it. */
    TargetConfig.prototype._closeAndSave = function () {
        var self = this,
            invalids = this._dialog.find('input:invalid'),
            prefix = this._pluginMetadata.id + '.';

        if (invalids.length) {
            $(invalids[0]).focus();
            return;
        }
        this._pluginConfig = {};
        this._globalConfig = {};
        Object.keys(this._pluginWidgets).forEach(function (key) {
            if (key.indexOf(prefix) === 0) {
                self._pluginConfig[key.slice(prefix.length)] = self._pluginWidgets[key].getValue();
            }
        });
        Object.keys(this._globalWidgets).forEach(function (name) {
            self._globalConfig[name] = self._globalWidgets[name].getValue();
        });
        this._dialog.modal('hide');
    };

    TargetConfig.prototype._initDialog = function (viewOnly) {
        var self = this;
        PluginConfigDialog.prototype._initDialog.call(this, viewOnly);
        this._dialog.addClass('target-config-dialog');
        this._saveConfigurationCb.append($('<span class="target-no-secrets"/>')
            .text(' (secrets are never saved)'));
        this._addOrigin();
        KINDS.forEach(function (kind) {
            self._kindRow(kind).find('select').on('change', function () {
                self._update();
            });
        });
        this._update();
    };

    TargetConfig.prototype._kindRow = function (kind) {
        return this._dialog ? this._dialog.find('.target-kind[data-kind="' + kind + '"]') : $();
    };

    /** The banner that says which node(s) the targets come from (or that there are none). */
    TargetConfig.prototype._addOrigin = function () {
        var targets = this._targets || {nodes: [], own: {}, others: {}},
            entries = this._entries,
            banner = $('<div class="target-origin alert alert-info"/>'),
            lines = [],
            names;

        if (!this._entries.storage && !this._entries.compute) {
            return;
        }
        if (targets.editing && targets.nodes.length) {
            names = targets.nodes.map(function (n) {
                return n.type + ' \u201c' + n.name + '\u201d';
            });
            lines.push('Sets the targets of ' + (names.length > 1 ? 'the ' + names.length + ' selected nodes: ' : '') +
                names.join(', ') + '.');
        }
        KINDS.forEach(function (kind) {
            var choice = targets.own[kind];
            if (choice) {
                lines.push(kind.charAt(0).toUpperCase() + kind.slice(1) + ': ' + describe(choice, kind, entries) + ', set on ' +
                    choice.from + ' by SetExecutionTargets' + (targets.editing ? ' (preselected).' :
                    ': the run uses it' + (/^(pipeline|operation) /.test(choice.from) ?
                    ' (clear it with SetExecutionTargets to choose here).' : '.')));
            }
            Object.keys((targets.others || {})[kind] || {}).forEach(function (id) {
                lines.push(kind.charAt(0).toUpperCase() + kind.slice(1) + ' ' + id + ' is the own choice of ' +
                    targets.others[kind][id].join(', ') + ': its secrets are asked for below.');
            });
        });
        if (!lines.length && targets.nodes.length) {
            lines.push('No targets are set on ' + targets.nodes[0].type + ' \u201c' + targets.nodes[0].name +
                '\u201d: the choice below is used.');
        }
        if (lines.length) {
            lines.forEach(function (line) {
                banner.append($('<div/>').text(line));
            });
            this._divContainer.prepend(banner);
        }
    };

    /** Show only the chosen backends' fields (and the secrets of the other backends in use). */
    TargetConfig.prototype._update = function () {
        var self = this,
            chosen = {};
        if (!this._dialog) {
            return;
        }
        KINDS.forEach(function (kind) {
            var select = self._kindRow(kind).find('select');
            // A kind the node fixes is a read-only label: its value is the node's choice.
            chosen[kind] = select.length ? select.val() : (self._prevConfig || {})[kind];
        });
        this._dialog.find('.target-field').each(function () {
            var el = $(this);
            el.toggle(self._visible(el.attr('data-config-name'), chosen));
        });
        KINDS.forEach(function (kind) {
            var row = self._kindRow(kind),
                backends = (self._entries[kind] && self._entries[kind].backends) || {},
                info = backends[chosen[kind]],
                shown = self._dialog.find('.target-field[data-kind="' + kind + '"][data-backend="' +
                    chosen[kind] + '"]').length,
                note = row.find('.target-backend-note'),
                text = '';
            if (!row.length) {
                return;
            }
            if (!note.length) {
                row.append($('<div class="row"/>').append(
                    note = $('<div class="target-backend-note col-sm-8 col-sm-offset-4"/>')));
            }
            if (info) {
                text = info.name + (info.thisServer ? ' on this server (' + window.location.origin + ')' : '');
                if (info.fixed && info.fixed.length) {
                    text += '; set by the operator: ' + info.fixed.join(', ');
                }
                if (!shown) {
                    text += '; nothing to set here';
                }
            } else if (chosen[kind] === '') {
                text = 'Keeps what the node has';
            }
            note.text(text);
        });
    };

    return TargetConfig;
});
