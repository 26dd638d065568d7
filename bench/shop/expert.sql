-- A DBA's index set for the demo's shop workload, written by hand (applied on top of the start state).
DROP INDEX legacy_orders_total, legacy_orders_customer, legacy_products_category;
CREATE INDEX ON customers (lower(email));
CREATE INDEX ON orders (customer_id, created_at DESC);
CREATE INDEX ON order_items (order_id);
CREATE INDEX ON products (sku text_pattern_ops);
CREATE INDEX ON orders (created_at) WHERE status = 'paid';
CREATE INDEX ON reviews (product_id) INCLUDE (rating);
CREATE INDEX ON reviews (created_at) WHERE moderated_at IS NULL;
