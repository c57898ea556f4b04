/*globals define, _, $, WebGMEGlobal*/
/*jshint browser: true*/
/**
 * ExecutionView: the visualizer of Execution nodes (the id DeepForge's library names first in Execution's
 * validVisualizers registry).  The jobs are drawn as the pipeline's DAG, each coloured by its status; the side
 * panel shows the Execution's status and times, and the selected job's console output (its `stdout`
 * attribute, read-only), which streams in as the running plugin commits it: the territory on the Execution
 * reaches the jobs, so each commit arrives as a territory event (no polling).  With no job selected the
 * view follows the running job.
 *
 * Buttons: "Cancel" runs CancelExecution on the Execution (no dialog: it takes no choice); "Re-run job" opens
 * ExecuteJob on the selected job and "Run again" ExecutePipeline on the Execution, both through WebGME's
 * plugin invocation (InterpreterManager.configureAndRun), so their config dialog comes up as from the play
 * menu.
 */
define([
    'panel/PipelineEditor/PipelineEditorPanel'
], function (PipelineEditorPanel) {
    'use strict';

    var FINISHED = ['success', 'fail', 'failed', 'canceled'],
        NAMESPACE_PLUGINS = {cancel: 'CancelExecution', rerunJob: 'ExecuteJob', rerun: 'ExecutePipeline'};

    function pad(n) {
        return (n < 10 ? '0' : '') + n;
    }

    /** 2026-12-01 17:20:05 (local time), or '' for an empty/invalid epoch-ms value. */
    function formatTime(ms) {
        var d;
        ms = Number(ms);
        if (!ms) {
            return '';
        }
        d = new Date(ms);
        return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
            pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
    }

    /** 1 h 02 min, 3 min 05 s, 12.3 s */
    function formatDuration(ms) {
        var s = ms / 1000, m, h;
        if (!(ms >= 0)) {
            return '';
        }
        if (s < 60) {
            return (s < 10 ? s.toFixed(1) : Math.round(s)) + ' s';
        }
        m = Math.floor(s / 60);
        s = Math.round(s - 60 * m);
        if (m < 60) {
            return m + ' min ' + pad(s) + ' s';
        }
        h = Math.floor(m / 60);
        return h + ' h ' + pad(m - 60 * h) + ' min';
    }

    function ExecutionViewPanel(layoutManager, params) {
        this._followedJob = null;
        this._selectedJob = null;
        PipelineEditorPanel.call(this, layoutManager, params);
    }

    ExecutionViewPanel.prototype = Object.create(PipelineEditorPanel.prototype);
    ExecutionViewPanel.prototype.constructor = ExecutionViewPanel;
    ExecutionViewPanel.prototype.panelName = 'ExecutionViewPanel';
    ExecutionViewPanel.prototype.hint = 'Click a job to read its output; double-click opens it.';

    ExecutionViewPanel.prototype._initialize = function () {
        var self = this;
        PipelineEditorPanel.prototype._initialize.call(this);
        this.$el.addClass('execution-view-panel');
        this.$side = $('<div class="execution-view-side"/>').css({
            flex: '0 0 42%', 'max-width': '700px', display: 'flex', 'flex-direction': 'column',
            'border-left': '1px solid #ddd', background: '#fff', 'min-height': 0
        }).appendTo(this.$body);
        this.$summary = $('<div class="execution-summary"/>').css({padding: '8px 10px', 'font-size': '12px',
            'border-bottom': '1px solid #eee'}).appendTo(this.$side);
        this.$buttons = $('<div class="execution-buttons"/>').css({padding: '6px 10px'}).appendTo(this.$side);
        this.$cancel = $('<button type="button" class="btn btn-sm btn-danger execution-cancel">Cancel</button>')
            .attr('title', 'CancelExecution: stop this execution and its running jobs').appendTo(this.$buttons);
        this.$rerunJob = $('<button type="button" class="btn btn-sm btn-default execution-rerun-job">' +
            'Re-run job</button>').attr('title', 'ExecuteJob on the selected job').appendTo(this.$buttons);
        this.$rerun = $('<button type="button" class="btn btn-sm btn-default execution-rerun">Run again</button>')
            .attr('title', 'ExecutePipeline on this execution').appendTo(this.$buttons);
        this.$buttons.children().css({'margin-right': '6px'});
        this.$jobHeader = $('<div class="execution-job"/>').css({padding: '6px 10px', 'font-size': '12px',
            'border-top': '1px solid #eee'}).appendTo(this.$side);
        this.$console = $('<pre class="execution-console" tabindex="0"/>').attr('aria-readonly', 'true').css({
            flex: '1 1 auto', margin: '0 10px 10px', 'overflow': 'auto', background: '#1e1e1e',
            color: '#e6e6e6', 'font-size': '12px', padding: '8px', 'white-space': 'pre-wrap',
            'border-radius': '4px', 'min-height': '120px'
        }).appendTo(this.$side);

        this.$cancel.on('click', function () {
            self._runPlugin(NAMESPACE_PLUGINS.cancel, self._nodeId, false);
        });
        this.$rerunJob.on('click', function () {
            if (self._selectedJob) {
                self._runPlugin(NAMESPACE_PLUGINS.rerunJob, self._selectedJob, true);
            }
        });
        this.$rerun.on('click', function () {
            self._runPlugin(NAMESPACE_PLUGINS.rerun, self._nodeId, true);
        });
    };

    ExecutionViewPanel.prototype.onSelect = function (ids) {
        this._selectedJob = ids.length === 1 ? ids[0] : null;
        PipelineEditorPanel.prototype.onSelect.call(this, ids);
        this._renderSide();
    };

    ExecutionViewPanel.prototype._show = function (nodeId) {
        this._selectedJob = null;
        this._followedJob = null;
        PipelineEditorPanel.prototype._show.call(this, nodeId);
    };

    ExecutionViewPanel.prototype.onGraph = function () {
        this._renderSide();
    };

    ExecutionViewPanel.prototype._job = function (id) {
        return (this.graph ? this.graph.nodes : []).filter(function (n) {
            return n.id === id;
        })[0] || null;
    };

    ExecutionViewPanel.prototype._renderSide = function () {
        var execution = this._client.getNode(this._nodeId),
            graph = this.graph || {nodes: []},
            status, start, end, job, running, text, atBottom, el;
        if (!execution) {
            return;
        }
        status = execution.getAttribute('status') || 'pending';
        start = Number(execution.getAttribute('startTime')) || 0;
        end = Number(execution.getAttribute('endTime')) || 0;
        this.$summary.empty()
            .append($('<span class="execution-status"/>').attr('data-status', status).text(status).css({
                display: 'inline-block', padding: '1px 8px', 'border-radius': '8px', 'font-weight': 'bold',
                background: {success: '#b9e4b0', running: '#ffe08a', failed: '#f4b6b3', fail: '#f4b6b3',
                    canceled: '#d0c6e0'}[status] || '#eee'
            }))
            .append($('<span/>').css({'margin-left': '8px'}).text(
                graph.nodes.filter(function (n) {
                    return n.status === 'success';
                }).length + ' of ' + graph.nodes.length + ' jobs done'))
            .append($('<div class="execution-times"/>').css({'margin-top': '4px', color: '#444'}).text(
                (start ? 'started ' + formatTime(start) : 'not started') +
                (end && start ? ' \u00b7 ended ' + formatTime(end) + ' \u00b7 took ' + formatDuration(end - start) :
                    start && status === 'running' ? ' \u00b7 running for ' + formatDuration(Date.now() - start) : '')));
        this.$cancel.prop('disabled', FINISHED.indexOf(status) !== -1 || status === 'pending');

        // the job shown: the selected one, else the one running (the last one that ran, once none runs)
        running = graph.nodes.filter(function (n) {
            return n.status === 'running' || n.status === 'queued' || n.status === 'created';
        })[0];
        if (running) {
            this._followedJob = running.id;
        } else if (!this._job(this._followedJob)) {
            this._followedJob = this._defaultJob(graph);
        }
        job = this._job(this._selectedJob) || this._job(this._followedJob);
        this.$rerunJob.prop('disabled', !this._selectedJob);
        if (!job) {
            this.$jobHeader.text('Select a job to read its output.');
            this.$console.text('').attr('data-job', '');
            return;
        }
        this.$jobHeader.empty()
            .append($('<b class="execution-job-name"/>').text(job.name))
            .append($('<span class="execution-job-status"/>').attr('data-status', job.status)
                .css({'margin-left': '8px'}).text(job.status))
            .append(this._selectedJob ? '' : $('<span/>').css({'margin-left': '8px', color: '#888'})
                .text(this._followedJob && job.status === 'running' ? '(following the running job)' : ''));
        text = job.attributes.stdout || '';
        el = this.$console[0];
        atBottom = el.scrollTop + el.clientHeight >= el.scrollHeight - 4;
        if (this.$console.attr('data-job') !== job.id || this.$console.text() !== text) {
            this.$console.text(text).attr('data-job', job.id);
            if (atBottom) {
                el.scrollTop = el.scrollHeight;
            }
        }
    };

    /** The job to show when none is selected or running: the first failed one, else the last one (a sink). */
    ExecutionViewPanel.prototype._defaultJob = function (graph) {
        var feeding = {},
            failed = graph.nodes.filter(function (n) {
                return n.status === 'fail' || n.status === 'failed';
            })[0],
            sinks;
        graph.edges.forEach(function (edge) {
            feeding[edge.src] = true;
        });
        sinks = graph.nodes.filter(function (n) {
            return !n.outputs.some(function (port) {
                return feeding[port.id];
            });
        });
        return (failed || sinks[sinks.length - 1] || graph.nodes[0] || {}).id || null;
    };

    /** Run a plugin on `nodeId` the way the play menu does (withDialog) or straight away with its defaults. */
    ExecutionViewPanel.prototype._runPlugin = function (pluginId, nodeId, withDialog) {
        var client = this._client,
            metadata = WebGMEGlobal.allPluginsMetadata && WebGMEGlobal.allPluginsMetadata[pluginId],
            context, config = {};

        function done(result) {
            if (result === false) {
                return;  // closed from its dialog
            }
            client.notifyUser({
                message: pluginId + (result && result.success ? ' finished' : ' failed: ' +
                    ((result && (result.error || (result.messages || []).map(function (m) {
                        return m.message;
                    }).join('; '))) || 'no result')),
                severity: result && result.success ? 'success' : 'error'
            });
        }

        if (!metadata) {
            client.notifyUser({message: 'plugin ' + pluginId + ' is not available on this server', severity: 'error'});
            return;
        }
        if (withDialog) {
            metadata = $.extend({}, metadata, {__context: {activeNodeId: nodeId, activeSelectionIds: []}});
            WebGMEGlobal.InterpreterManager.configureAndRun(metadata, done);
            return;
        }
        (metadata.configStructure || []).forEach(function (field) {
            config[field.name] = field.value;
        });
        context = client.getCurrentPluginContext(pluginId, nodeId, []);
        context.pluginConfig = config;
        client.runServerPlugin(pluginId, context, function (err, result) {
            done(err ? {success: false, error: err.message || String(err)} : result);
        });
    };

    ExecutionViewPanel.formatTime = formatTime;
    ExecutionViewPanel.formatDuration = formatDuration;
    return ExecutionViewPanel;
});
