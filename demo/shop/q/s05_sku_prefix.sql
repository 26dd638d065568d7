\set p random(1, 20000 * :scale)
SELECT id, name, price FROM products WHERE sku LIKE 'SKU-' || lpad((:p / 10)::text, 6, '0') || '%';
