/*globals define, $*/
/*jshint browser: true*/
/**
 * PipelineDagWidget: a pipeline (or an execution's jobs) drawn as a DAG in SVG.
 *
 * Each node is a box with its input ports along the top edge and its output ports along the bottom edge; each
 * connection is an arrow from an output port to an input port.  Nodes are laid out in layers by topological
 * depth (a node sits one row below the deepest node feeding it), and within a layer ordered by the mean
 * position of the nodes feeding it (then by name), so the same graph is always drawn the same way.
 *
 *   widget.setGraph({nodes: [{id, name, status, subtitle, inputs: [{id, name}], outputs: [{id, name}]}],
 *                    edges: [{id, src: outputPortId, dst: inputPortId}]})
 *   widget.setSelection([ids]); widget.onSelect = function (ids) {}; widget.onOpen = function (id) {}
 *
 * The SVG carries data-* attributes the browser tests read: g.dag-node[data-id][data-name][data-status],
 * g.dag-port[data-id][data-name][data-kind=input|output], path.dag-edge[data-id][data-src][data-dst].
 */
define([], function () {
    'use strict';

    var SVG_NS = 'http://www.w3.org/2000/svg',
        PORT_R = 5,
        PORT_GAP = 90,          // horizontal room per port (its label sits beside it)
        NODE_MIN_W = 150,
        NODE_H = 54,
        LAYER_GAP = 80,         // vertical room between rows, for the arrows and the port labels
        NODE_GAP = 40,
        MARGIN = 30,
        CHAR_W = 7.5,
        // status -> fill; unknown values are drawn like pending
        STATUS_COLOURS = {
            pending: '#eeeeee',
            created: '#d6e9f8',
            queued: '#d6e9f8',
            running: '#ffe08a',
            success: '#b9e4b0',
            fail: '#f4b6b3',
            failed: '#f4b6b3',
            canceled: '#d0c6e0'
        },
        STYLE_ID = 'pipeline-dag-widget-style',
        STYLE = [
            '.pipeline-dag { width: 100%; height: 100%; overflow: auto; background: #fafafa; }',
            '.pipeline-dag svg { display: block; font-family: sans-serif; font-size: 12px; user-select: none; }',
            '.pipeline-dag .dag-node rect.dag-box { fill: #ffffff; stroke: #6b7a8f; stroke-width: 1.5; rx: 6; }',
            '.pipeline-dag .dag-node { cursor: pointer; }',
            '.pipeline-dag .dag-node.selected rect.dag-box { stroke: #1f6fd1; stroke-width: 3; }',
            '.pipeline-dag .dag-node text.dag-name { font-weight: bold; font-size: 13px; fill: #222; }',
            '.pipeline-dag .dag-node text.dag-subtitle { fill: #555; font-size: 11px; }',
            '.pipeline-dag .dag-port circle { fill: #ffffff; stroke: #33475b; stroke-width: 1.5; }',
            '.pipeline-dag .dag-port.dag-port-output circle { fill: #33475b; }',
            '.pipeline-dag .dag-port text { fill: #33475b; font-size: 11px; }',
            '.pipeline-dag path.dag-edge { fill: none; stroke: #4a6785; stroke-width: 2; }',
            '.pipeline-dag .dag-empty { fill: #777; font-size: 14px; }'
        ].join('\n');

    function el(name, attrs, parent) {
        var node = document.createElementNS(SVG_NS, name);
        Object.keys(attrs || {}).forEach(function (key) {
            node.setAttribute(key, attrs[key]);
        });
        if (parent) {
            parent.appendChild(node);
        }
        return node;
    }

    function ensureStyle() {
        if (!document.getElementById(STYLE_ID)) {
            $('<style/>', {id: STYLE_ID, type: 'text/css'}).text(STYLE).appendTo(document.head);
        }
    }

    /** Layers by longest path from a source; a cycle (not a valid pipeline) is cut where it is found. */
    function layout(graph) {
        var portOwner = {},
            preds = {},
            byId = {},
            depth = {},
            visiting = {},
            layers = [],
            positions = {};

        graph.nodes.forEach(function (node) {
            byId[node.id] = node;
            preds[node.id] = [];
            node.inputs.concat(node.outputs).forEach(function (port) {
                portOwner[port.id] = node.id;
            });
        });
        graph.edges.forEach(function (edge) {
            var src = portOwner[edge.src],
                dst = portOwner[edge.dst];
            if (src && dst && src !== dst && preds[dst].indexOf(src) === -1) {
                preds[dst].push(src);
            }
        });

        function depthOf(id) {
            if (depth.hasOwnProperty(id)) {
                return depth[id];
            }
            if (visiting[id]) {
                return 0;
            }
            visiting[id] = true;
            depth[id] = preds[id].reduce(function (d, p) {
                return Math.max(d, depthOf(p) + 1);
            }, 0);
            return depth[id];
        }

        graph.nodes.slice().sort(function (a, b) {
            return a.name < b.name ? -1 : a.name > b.name ? 1 : (a.id < b.id ? -1 : 1);
        }).forEach(function (node) {
            var d = depthOf(node.id);
            (layers[d] = layers[d] || []).push(node);
        });
        layers = layers.filter(Boolean);

        // Order each row by where its inputs come from: the mean position of the output ports feeding it (a
        // port's position = its node's place in the row + its place among that node's ports); ties (fed by
        // the same port) by where their outputs go in the row below, then by name.  Two sweeps down: the
        // first gives the rows below an order to break the second's ties with.
        var portPlace = {},
            succs = {},
            order = {};
        graph.nodes.forEach(function (node) {
            succs[node.id] = [];
            [node.inputs, node.outputs].forEach(function (ports) {
                ports.forEach(function (port, i) {
                    portPlace[port.id] = (i + 0.5) / ports.length;
                });
            });
        });
        graph.edges.forEach(function (edge) {
            var src = portOwner[edge.src],
                dst = portOwner[edge.dst];
            if (src && dst && src !== dst) {
                succs[src].push({node: dst, port: edge.dst});
                (preds[dst].ports = preds[dst].ports || []).push({node: src, port: edge.src});
            }
        });
        function mean(links) {
            var known = (links || []).filter(function (l) {
                return order.hasOwnProperty(l.node);
            });
            return known.length ? known.reduce(function (sum, l) {
                return sum + order[l.node] + portPlace[l.port];
            }, 0) / known.length : Infinity;
        }
        [false, true].forEach(function (second) {
            var below = second ? Object.assign({}, order) : {};
            layers.forEach(function (layer) {
                var keyed = layer.map(function (node, i) {
                    var down = (succs[node.id] || []).filter(function (l) {
                        return below.hasOwnProperty(l.node);
                    });
                    return {
                        node: node,
                        key: mean(preds[node.id].ports),
                        key2: down.length ? down.reduce(function (sum, l) {
                            return sum + below[l.node] + portPlace[l.port];
                        }, 0) / down.length : Infinity,
                        i: i
                    };
                });
                keyed.sort(function (a, b) {
                    return (a.key - b.key) || (a.key2 - b.key2) || (a.i - b.i);
                });
                layer.length = 0;
                keyed.forEach(function (k, i) {
                    layer.push(k.node);
                    order[k.node.id] = i;
                });
            });
        });

        var width = 0;
        layers.forEach(function (layer) {
            var rowWidth = 0;
            layer.forEach(function (node) {
                var ports = Math.max(node.inputs.length, node.outputs.length, 1),
                    label = Math.max((node.name || '').length, (node.subtitle || '').length) * CHAR_W + 30;
                node._w = Math.max(NODE_MIN_W, ports * PORT_GAP + 20, label);
                rowWidth += node._w + NODE_GAP;
            });
            layer._w = rowWidth - NODE_GAP;
            width = Math.max(width, layer._w);
        });
        layers.forEach(function (layer, row) {
            var x = MARGIN + (width - layer._w) / 2,
                y = MARGIN + row * (NODE_H + LAYER_GAP);
            layer.forEach(function (node) {
                positions[node.id] = {x: x, y: y, w: node._w, h: NODE_H};
                x += node._w + NODE_GAP;
            });
        });
        return {
            positions: positions,
            width: width + 2 * MARGIN,
            height: layers.length * (NODE_H + LAYER_GAP) - LAYER_GAP + 2 * MARGIN
        };
    }

    function PipelineDagWidget(container, options) {
        ensureStyle();
        this.options = options || {};
        this.$el = $('<div class="pipeline-dag"/>');
        container.append(this.$el);
        this.graph = {nodes: [], edges: []};
        this.selection = [];
        this.onSelect = function () {};
        this.onOpen = function () {};
        this.render();
    }

    PipelineDagWidget.prototype.setGraph = function (graph) {
        var ids = {};
        this.graph = graph;
        graph.nodes.forEach(function (node) {
            ids[node.id] = true;
        });
        this.selection = this.selection.filter(function (id) {
            return ids[id];
        });
        this.render();
    };

    PipelineDagWidget.prototype.setSelection = function (ids) {
        this.selection = ids.slice();
        this._markSelection();
    };

    PipelineDagWidget.prototype._markSelection = function () {
        var selected = this.selection;
        this.$el.find('g.dag-node').each(function () {
            var on = selected.indexOf(this.getAttribute('data-id')) !== -1;
            this.classList.toggle('selected', on);
        });
    };

    PipelineDagWidget.prototype._click = function (id, event) {
        var i = this.selection.indexOf(id);
        if (event.ctrlKey || event.metaKey || event.shiftKey) {
            if (i === -1) {
                this.selection.push(id);
            } else {
                this.selection.splice(i, 1);
            }
        } else {
            this.selection = [id];
        }
        this._markSelection();
        this.onSelect(this.selection.slice());
    };

    PipelineDagWidget.prototype.render = function () {
        var self = this,
            graph = this.graph,
            placed = layout(graph),
            svg = el('svg', {
                width: Math.max(placed.width, 300),
                height: Math.max(placed.height, 120),
                class: 'dag-svg'
            }),
            defs = el('defs', {}, svg),
            marker = el('marker', {
                id: 'dag-arrow', viewBox: '0 0 10 10', refX: 9, refY: 5,
                markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse'
            }, defs),
            edgeLayer = el('g', {class: 'dag-edges'}, svg),
            nodeLayer = el('g', {class: 'dag-nodes'}, svg),
            portXY = {};

        el('path', {d: 'M 0 0 L 10 5 L 0 10 z', fill: '#4a6785'}, marker);

        if (!graph.nodes.length) {
            el('text', {x: MARGIN, y: MARGIN + 20, class: 'dag-empty'}, svg).textContent =
                this.options.emptyText || 'No operations yet';
        }

        graph.nodes.forEach(function (node) {
            var pos = placed.positions[node.id],
                g = el('g', {
                    class: 'dag-node status-' + (node.status || 'none'),
                    'data-id': node.id,
                    'data-name': node.name,
                    'data-status': node.status || '',
                    transform: 'translate(' + pos.x + ',' + pos.y + ')'
                }, nodeLayer),
                box = el('rect', {class: 'dag-box', width: pos.w, height: pos.h}, g);

            if (node.status) {
                box.style.fill = STATUS_COLOURS[node.status] || STATUS_COLOURS.pending;
            }
            el('text', {
                class: 'dag-name', x: pos.w / 2, y: node.subtitle ? 24 : 32, 'text-anchor': 'middle'
            }, g).textContent = node.name;
            if (node.subtitle) {
                el('text', {
                    class: 'dag-subtitle', x: pos.w / 2, y: 41, 'text-anchor': 'middle'
                }, g).textContent = node.subtitle;
            }

            [['input', node.inputs, 0], ['output', node.outputs, pos.h]].forEach(function (side) {
                var kind = side[0], ports = side[1], y = side[2], step = pos.w / (ports.length + 1);
                ports.forEach(function (port, i) {
                    var x = step * (i + 1),
                        pg = el('g', {
                            class: 'dag-port dag-port-' + kind,
                            'data-id': port.id,
                            'data-name': port.name,
                            'data-kind': kind
                        }, g);
                    el('circle', {cx: x, cy: y, r: PORT_R}, pg);
                    el('text', {
                        x: x + PORT_R + 3,
                        y: kind === 'input' ? y - 6 : y + 15
                    }, pg).textContent = port.name;
                    el('title', {}, pg).textContent = kind + ' ' + port.name;
                    portXY[port.id] = {x: pos.x + x, y: pos.y + y};
                });
            });

            g.addEventListener('click', function (event) {
                event.stopPropagation();
                self._click(node.id, event);
            });
            g.addEventListener('dblclick', function (event) {
                event.stopPropagation();
                self.onOpen(node.id);
            });
        });

        graph.edges.forEach(function (edge) {
            var a = portXY[edge.src], b = portXY[edge.dst], bend;
            if (!a || !b) {
                return;  // an end outside this graph (a dangling connection): nothing to draw it to
            }
            bend = Math.max(30, Math.abs(b.y - a.y) / 2);
            el('path', {
                class: 'dag-edge',
                'data-id': edge.id,
                'data-src': edge.src,
                'data-dst': edge.dst,
                'marker-end': 'url(#dag-arrow)',
                d: 'M ' + a.x + ' ' + (a.y + PORT_R) + ' C ' + a.x + ' ' + (a.y + bend) + ', ' +
                    b.x + ' ' + (b.y - bend) + ', ' + b.x + ' ' + (b.y - PORT_R - 1)
            }, edgeLayer);
        });

        svg.addEventListener('click', function () {
            if (self.selection.length) {
                self.selection = [];
                self._markSelection();
                self.onSelect([]);
            }
        });

        this.$el.empty().append(svg);
        this._markSelection();
    };

    PipelineDagWidget.prototype.destroy = function () {
        this.$el.remove();
    };

    PipelineDagWidget.STATUS_COLOURS = STATUS_COLOURS;
    PipelineDagWidget.layout = layout;
    return PipelineDagWidget;
});
