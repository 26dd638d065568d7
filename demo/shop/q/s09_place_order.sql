\set c random(1, 50000 * :scale)
\set p random(1, 20000 * :scale)
BEGIN;
INSERT INTO orders (customer_id, status, total, created_at) VALUES (:c, 'pending', 42.00, now()) RETURNING id \gset
INSERT INTO order_items (order_id, product_id, qty, price) VALUES (:id, :p, 1, 42.00);
UPDATE products SET stock = stock - 1 WHERE id = :p;
COMMIT;
