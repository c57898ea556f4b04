/*globals define, _, $, WebGMEGlobal*/
/*jshint browser: true*/
/**
 * PipelineEditor: the visualizer of Pipeline nodes (the id DeepForge's own library names first in
 * Pipeline's validVisualizers registry).  Operations are drawn with their input and output ports and the
 * Transporters as arrows between ports (widgets/PipelineDag).
 *
 * Clicking an operation (ctrl/shift-click for several) makes it WebGME's active selection, with the pipeline
 * as active node, so plugins started from the toolbar (SetExecutionTargets) apply to the selected
 * operations; clicking the background clears it.  Double-clicking an operation opens it.
 *
 * ExecutionView (panels/ExecutionView) extends this panel for Execution nodes.
 */
define([
    'js/PanelBase/PanelBaseWithHeader',
    'js/PanelManager/IActivePanel',
    'js/Constants',
    'panel/PipelineDag/PipelineDagWidget',
    'panel/PipelineDag/PipelineGraph'
], function (PanelBaseWithHeader, IActivePanel, CONSTANTS, PipelineDagWidget, PipelineGraph) {
    'use strict';

    function targetsText(registryValue) {
        var targets;
        if (!registryValue) {
            return '';
        }
        try {
            targets = typeof registryValue === 'string' ? JSON.parse(registryValue) : registryValue;
        } catch (e) {
            return '';
        }
        return ['storage', 'compute'].filter(function (kind) {
            return targets[kind] && targets[kind].id;
        }).map(function (kind) {
            return kind + ': ' + targets[kind].id;
        }).join(' \u00b7 ');
    }

    function PipelineEditorPanel(layoutManager, params) {
        var options = {};
        options[PanelBaseWithHeader.OPTIONS.LOGGER_INSTANCE_NAME] = this.panelName || 'PipelineEditorPanel';
        options[PanelBaseWithHeader.OPTIONS.FLOATING_TITLE] = true;
        PanelBaseWithHeader.apply(this, [options, layoutManager]);
        this._client = params.client;
        this._nodeId = null;
        this._watch = null;
        this._initialize();
    }

    _.extend(PipelineEditorPanel.prototype, PanelBaseWithHeader.prototype);
    _.extend(PipelineEditorPanel.prototype, IActivePanel.prototype);

    PipelineEditorPanel.prototype.panelName = 'PipelineEditorPanel';
    PipelineEditorPanel.prototype.hint = 'Click an operation to select it (ctrl/shift-click: several) \u2014 ' +
        'SetExecutionTargets from the play menu then applies to the selection. Double-click opens it.';

    PipelineEditorPanel.prototype._initialize = function () {
        var self = this;
        this.setTitle('');
        this.$el.addClass('pipeline-editor-panel');
        this.$el.css({display: 'flex', 'flex-direction': 'column', height: '100%'});
        this.$bar = $('<div class="pipeline-editor-bar"/>').css({
            padding: '6px 10px', 'border-bottom': '1px solid #ddd', background: '#fff', 'font-size': '12px',
            color: '#555', 'flex': '0 0 auto'
        }).appendTo(this.$el);
        this.$title = $('<b class="pipeline-editor-title"/>').css({'font-size': '14px', color: '#222',
            'margin-right': '12px'}).appendTo(this.$bar);
        $('<span class="pipeline-editor-hint"/>').text(this.hint).appendTo(this.$bar);
        // a Pipeline's executions (its `executions` set, which ExecutePipeline fills): click one to follow it
        this.$runs = $('<div class="pipeline-editor-executions"/>').css({'margin-top': '4px'}).hide()
            .appendTo(this.$bar);
        this.$body = $('<div class="pipeline-editor-body"/>').css({flex: '1 1 auto', display: 'flex',
            'min-height': 0}).appendTo(this.$el);
        this.$graph = $('<div class="pipeline-editor-graph"/>').css({flex: '1 1 auto', 'min-width': 0,
            position: 'relative'}).appendTo(this.$body);
        this.widget = new PipelineDagWidget(this.$graph, {emptyText: 'This pipeline has no operations yet'});
        this.widget.onSelect = function (ids) {
            self.onSelect(ids);
        };
        this.widget.onOpen = function (id) {
            self.onOpen(id);
        };
        this.onActivate();
    };

    /** Active selection = the clicked operations; the pipeline stays the active node. */
    PipelineEditorPanel.prototype.onSelect = function (ids) {
        WebGMEGlobal.State.registerActiveSelection(ids, {invoker: this});
    };

    PipelineEditorPanel.prototype.onOpen = function (id) {
        WebGMEGlobal.State.registerActiveObject(id);
    };

    PipelineEditorPanel.prototype._activeObjectChanged = function (model, nodeId) {
        if (nodeId === this._nodeId) {
            return;
        }
        this._show(nodeId);
    };

    PipelineEditorPanel.prototype._show = function (nodeId) {
        var self = this;
        if (this._watch) {
            this._watch.stop();
            this._watch = null;
        }
        this._nodeId = nodeId;
        this.widget.setSelection([]);
        if (typeof nodeId !== 'string') {
            return;
        }
        this._watch = PipelineGraph.watch(this._client, this, nodeId, function () {
            self._refresh();
        });
    };

    PipelineEditorPanel.prototype._refresh = function () {
        var node = this._client.getNode(this._nodeId),
            graph = PipelineGraph.read(this._client, this._nodeId),
            client = this._client;
        if (!node) {
            return;
        }
        this.$title.text(node.getAttribute('name') || this._nodeId);
        graph.nodes.forEach(function (entry) {
            var op = client.getNode(entry.id);
            // a job shows its status; an operation the targets SetExecutionTargets gave it, if any
            entry.subtitle = entry.status || (op ? targetsText(op.getRegistry('executionTargets')) : '');
        });
        this.graph = graph;
        this.widget.setGraph(graph);
        if (graph.kind === 'Pipeline') {
            this._showExecutions(node);
        }
        this.onGraph(graph, node);
    };

    /** Links to the pipeline's executions, newest first, each with its status. */
    PipelineEditorPanel.prototype._showExecutions = function (node) {
        var client = this._client,
            ids = node.getSetNames().indexOf('executions') === -1 ? [] : node.getMemberIds('executions'),
            runs;
        this._watch.also(ids);
        runs = ids.map(function (id) {
            return client.getNode(id);
        }).filter(Boolean).sort(function (a, b) {
            return (Number(b.getAttribute('createdAt')) || 0) - (Number(a.getAttribute('createdAt')) || 0);
        });
        this.$runs.empty().toggle(runs.length > 0).append($('<span/>').text('Executions: '));
        runs.forEach(function (run) {
            var status = run.getAttribute('status') || 'pending';
            $('<a href="#" class="pipeline-editor-execution"/>')
                .attr({'data-id': run.getId(), 'data-status': status, title: 'open this execution'})
                .text((run.getAttribute('name') || run.getId()) + ' (' + status + ')')
                .css({'margin-right': '10px'})
                .on('click', function (event) {
                    event.preventDefault();
                    WebGMEGlobal.State.registerActiveObject(run.getId());
                })
                .appendTo(this.$runs);
        }, this);
    };

    /** Hook for ExecutionView: the graph was (re)drawn from the model. */
    PipelineEditorPanel.prototype.onGraph = function () {};

    PipelineEditorPanel.prototype.onActivate = function () {
        WebGMEGlobal.State.off('change:' + CONSTANTS.STATE_ACTIVE_OBJECT, this._activeObjectChanged, this);
        WebGMEGlobal.State.on('change:' + CONSTANTS.STATE_ACTIVE_OBJECT, this._activeObjectChanged, this);
        if (typeof this._nodeId === 'string') {
            WebGMEGlobal.State.registerActiveObject(this._nodeId, {suppressVisualizerFromNode: true});
        }
        WebGMEGlobal.KeyboardManager.setListener(undefined);
        WebGMEGlobal.Toolbar.refresh();
    };

    PipelineEditorPanel.prototype.onDeactivate = function () {
        WebGMEGlobal.State.off('change:' + CONSTANTS.STATE_ACTIVE_OBJECT, this._activeObjectChanged, this);
    };

    PipelineEditorPanel.prototype.onResize = function () {};

    PipelineEditorPanel.prototype.destroy = function () {
        this.onDeactivate();
        if (this._watch) {
            this._watch.stop();
            this._watch = null;
        }
        this.widget.destroy();
        PanelBaseWithHeader.prototype.destroy.call(this);
    };

    PipelineEditorPanel.targetsText = targetsText;
    return PipelineEditorPanel;
});
